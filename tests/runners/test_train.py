from pathlib import Path

from runners.cli import main
from transforms.catalog import read_catalog_jsonl
from transforms.recommend import Model, Recommender

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
