from pathlib import Path

from runners.cli import main
from runners.train import customer_features, read_items
from transforms.catalog import read_catalog_jsonl
from transforms.model import BehaviourEvent
from transforms.recommend import Model, Recommender
from transforms.scoring import component_vector
from transforms.segments import SegmentRules
from transforms.settings import CoreSettings

HEADER = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
          "user_session\n")


def write_csv(path: Path) -> Path:
    """Ten customers browse a and b together early; later three of them also view c."""
    rows = []
    for u in range(10):
        rows.append(f"2019-10-01 00:00:{u:02d} UTC,view,a,1,shoes.sneakers,acme,10.00,u{u},s{u}")
        rows.append(f"2019-10-01 00:01:{u:02d} UTC,view,b,1,shoes.sneakers,acme,12.00,u{u},s{u}")
    for u in range(3):
        rows.append(f"2019-10-01 00:02:{u:02d} UTC,purchase,a,1,shoes.sneakers,acme,9.50,u{u},s{u}")
        rows.append(f"2019-10-01 00:03:{u:02d} UTC,view,c,2,,,30.00,u{u},s{u}")
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def test_train_evaluates_and_writes_a_loadable_model(tmp_path, capsys):
    data, out = write_csv(tmp_path / "events.csv"), tmp_path / "models" / "model.npz"
    args = ["train", "--input", str(data), "--out", str(out), "--holdout-fraction", "0.2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "recall@10" in printed and "baseline: category + global popularity" in printed
    model = Model.load(out)
    assert model.events == 26                  # refit on all events, not only the earlier part
    assert [pid for pid, _ in Recommender(model).recommend(["a"], [], ["c"], 1)] == ["b"]


def test_train_needs_an_output(tmp_path):
    data = write_csv(tmp_path / "events.csv")
    assert main(["train", "--input", str(data)]) == 2


def test_catalog_derive_writes_the_latest_price_per_product(tmp_path, capsys):
    data, out = write_csv(tmp_path / "events.csv"), tmp_path / "catalog.jsonl"
    assert main(["catalog", "derive", "--input", str(data), "--out", str(out)]) == 0
    items = {item.product_id: item for item in read_catalog_jsonl(out)}
    assert sorted(items) == ["a", "b", "c"]
    assert (items["a"].name, items["a"].price) == ("Acme sneakers", 9.5)
    assert items["c"].name == "Product c" and items["c"].url == "https://shop.example.invalid/p/c"


def test_train_fits_segments_into_the_model_and_reports_silhouette(tmp_path, capsys):
    data, out = write_csv(tmp_path / "events.csv"), tmp_path / "model.npz"
    args = ["train", "--input", str(data), "--out", str(out), "--holdout-fraction", "0",
            "--clusters", "2", "--seed", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "segments: 10 customers, k-means k=2" in printed
    assert "silhouette" in printed and "random assignment, same k" in printed
    model = Model.load(out)
    assert model.segments is not None and model.segments.centroids.shape == (2, 8)
    # M edges: quintiles of revenue in 30 d over 10 customers, 3 of whom bought at 9.50: the
    # 80 % quantile (position 0.8 * 9 = 7.2 of the sorted ten) is among the buyers.
    assert model.segments.rfm_edges[2].tolist() == [0.0, 0.0, 0.0, 9.5]
    # The buyers and the browsers land in different clusters, in-stream as in training.
    events = [e for e in read_items(data, "rees46") if isinstance(e, BehaviourEvent)]
    features = customer_features(events, CoreSettings(), model.trained_until)
    rules = SegmentRules(CoreSettings(), model.segments)
    clusters = [rules.cluster(component_vector(f, model.trained_until)) for f in features]
    buyers = {c for f, c in zip(features, clusters, strict=True) if f.purchases_30d}
    browsers = {c for f, c in zip(features, clusters, strict=True) if not f.purchases_30d}
    assert len(buyers) == 1 and len(browsers) == 1 and buyers != browsers


def test_train_without_clusters_still_writes_rfm_edges(tmp_path, capsys):
    data, out = write_csv(tmp_path / "events.csv"), tmp_path / "model.npz"
    args = ["train", "--input", str(data), "--out", str(out), "--holdout-fraction", "0",
            "--clusters", "0"]
    assert main(args) == 0
    assert "not measurable" in capsys.readouterr().out
    segments = Model.load(out).segments
    assert segments is not None and segments.centroids.shape == (0, 8)
    assert main(args[:-1] + ["-1"]) == 2
