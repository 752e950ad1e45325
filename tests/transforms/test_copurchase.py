"""Co-purchase pairs (transforms/recommend.py): learnt per order, tier 0 of post-purchase."""

import dataclasses

import numpy as np

from tests.builders import T0
from transforms.model import PRODUCT_VIEW, PURCHASE, BehaviourEvent, Product
from transforms.recommend import Model, Recommender, train


def line(cid: str, order: str | None, pid: str, t: int = T0, etype: str = PURCHASE,
         session: str = "s") -> BehaviourEvent:
    return BehaviourEvent(
        event_id=f"{cid}-{order}-{pid}-{etype}-{t}", customer_id=cid, event_type=etype,
        occurred_at=t, session_id=session, product=Product(pid, "shoes", "acme", 10.0),
        order_id=order,
    )


# phone+case bought together in three orders, phone+charger in one; phone and cable only viewed
# together (never an order): not a co-purchase. Same customer, other order: not a pair.
EVENTS = [
    line("u1", "o1", "phone"), line("u1", "o1", "case"),
    line("u2", "o2", "phone"), line("u2", "o2", "case"), line("u2", "o2", "charger"),
    line("u3", "o3", "phone"), line("u3", "o3", "case"),
    line("u4", None, "phone", etype=PRODUCT_VIEW), line("u4", None, "cable", etype=PRODUCT_VIEW),
    line("u5", "o5", "phone"), line("u5", "o6", "strap"),
]


def copurchased(model: Model, pid: str) -> list[tuple[str, float]]:
    ids = model.item_ids.tolist()
    i = ids.index(pid)
    assert model.cop_idx is not None and model.cop_score is not None
    return [(ids[j], float(s)) for j, s in zip(model.cop_idx[i], model.cop_score[i], strict=True)
            if j >= 0]


def test_pairs_are_counted_per_order_of_one_customer():
    model = train(EVENTS, neighbours=5)
    assert copurchased(model, "phone") == [("case", 3.0), ("charger", 1.0)]
    assert copurchased(model, "charger") == [("case", 1.0), ("phone", 1.0)]  # ties by id
    assert copurchased(model, "cable") == [] and copurchased(model, "strap") == []


def test_post_purchase_recommends_complements_first_then_the_other_tiers():
    rec = Recommender(train(EVENTS, neighbours=5))
    got = rec.recommend(["phone"], ["shoes"], {"phone"}, 3, complements_of=["phone"])
    assert [p for p, _ in got][:2] == ["case", "charger"]
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True) and len(got) == 3
    # Without complements_of the co-purchases are no tier of their own.
    plain = rec.recommend(["phone"], ["shoes"], {"phone"}, 3)
    assert plain != got


def test_excluded_and_unknown_products_are_never_complements():
    rec = Recommender(train(EVENTS, neighbours=5))
    got = rec.recommend(["phone"], [], {"phone", "case"}, 2, complements_of=["phone", "nope"])
    assert "case" not in [p for p, _ in got] and got[0][0] == "charger"


def test_a_model_file_without_co_purchases_still_loads_and_recommends(tmp_path):
    model = train(EVENTS, neighbours=5)
    old = dataclasses.replace(model, cop_idx=None, cop_score=None)
    path = tmp_path / "old.npz"
    old.save(path)
    with np.load(path) as z:
        assert "cop_idx" not in z.files
    loaded = Model.load(path)
    assert loaded.cop_idx is None
    got = Recommender(loaded).recommend(["phone"], ["shoes"], {"phone"}, 2,
                                        complements_of=["phone"])
    assert len(got) == 2  # neighbours and popularity stand in
    model.save(tmp_path / "new.npz")
    again = Model.load(tmp_path / "new.npz")
    assert again.cop_idx is not None and np.array_equal(again.cop_idx, model.cop_idx)


def test_inconsistent_co_purchase_arrays_are_refused(tmp_path):
    model = train(EVENTS, neighbours=5)
    assert model.cop_idx is not None
    bad = dataclasses.replace(model, cop_idx=model.cop_idx + 100)
    bad.save(tmp_path / "bad.npz")
    try:
        Model.load(tmp_path / "bad.npz")
    except ValueError as exc:
        assert "out of range" in str(exc)
    else:
        raise AssertionError("an out-of-range co-purchase index loaded")


def test_co_purchase_arrays_of_the_wrong_kind_or_alone_are_refused(tmp_path):
    model = train(EVENTS, neighbours=5)
    assert model.cop_idx is not None
    for bad in (dataclasses.replace(model, cop_score=None),
                dataclasses.replace(model, cop_idx=model.cop_idx.astype(np.float32))):
        bad.save(tmp_path / "bad.npz")
        try:
            Model.load(tmp_path / "bad.npz")
        except ValueError as exc:
            assert "cop shape" in str(exc)
        else:
            raise AssertionError("an inconsistent co-purchase model loaded")
