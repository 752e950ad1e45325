import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runners import SHIPPED_DATA as SHIPPED
from tests.builders import MINUTE, T0
from transforms.model import ADD_TO_CART, PRODUCT_VIEW, PURCHASE, BehaviourEvent, Product
from transforms.readers import read_rees46
from transforms.recommend import (
    Model,
    Recommender,
    evaluate,
    split_by_time,
    train,
)
from transforms.settings import DAY


def ev(cid: str, session: str, pid: str, t: int = T0, etype: str = PRODUCT_VIEW,
       category: str | None = "shoes", eid: str | None = None) -> BehaviourEvent:
    return BehaviourEvent(
        event_id=eid or f"{cid}-{session}-{pid}-{etype}-{t}", customer_id=cid, event_type=etype,
        occurred_at=t, session_id=session, product=Product(pid, category, "acme", 10.0),
    )


def basket(cid: str, session: str, *pids: str, t: int = T0, etype: str = PRODUCT_VIEW,
           category: str = "shoes") -> list[BehaviourEvent]:
    return [ev(cid, session, pid, t + i, etype, category) for i, pid in enumerate(pids)]


# a and b are seen together in three sessions, a and c in two, a and d in one (below support).
EVENTS = [
    *basket("u1", "s1", "a", "b", "c"),
    *basket("u2", "s2", "a", "b", "c"),
    *basket("u3", "s3", "a", "b", "d"),
    *basket("u4", "s4", "h1", "h2", category="hats"),
    *basket("u5", "s5", "h1", "h2", category="hats"),
    *basket("u6", "s6", "h3", category="hats"),
    *basket("u7", "s7", "h3", category="hats"),
    *basket("u8", "s8", "h3", category="hats"),
]


MODEL = train(EVENTS, neighbours=3)


@pytest.fixture
def model() -> Model:
    return MODEL


def neighbours_of(model: Model, pid: str) -> list[tuple[str, float]]:
    ids = model.item_ids.tolist()
    row = ids.index(pid)
    return [(ids[j], round(float(s), 4))
            for j, s in zip(model.nbr_idx[row], model.nbr_score[row], strict=True) if j >= 0]


def test_neighbours_are_cosine_of_session_co_occurrence_with_minimum_support(model):
    # All weights 1 (views): C[a,b] = 3, |a|^2 = 3, |b|^2 = 3 -> 1.0; C[a,c] = 2, |c|^2 = 2.
    assert neighbours_of(model, "a") == [("b", 1.0), ("c", round(2 / math.sqrt(6), 4))]
    assert ("d", pytest.approx(0.5)) not in neighbours_of(model, "a")  # one shared session only
    assert neighbours_of(model, "d") == []
    relaxed = train(EVENTS, neighbours=3, min_support=1)
    assert [pid for pid, _ in neighbours_of(relaxed, "a")] == ["b", "c", "d"]


def test_model_arrays_are_dense_and_typed(model):
    n = len(model.item_ids)
    assert model.item_ids.tolist() == sorted(model.item_ids.tolist())
    assert model.nbr_idx.shape == model.nbr_score.shape == (n, 3)
    assert model.nbr_idx.dtype == np.int32 and model.nbr_score.dtype == np.float32
    assert model.events == len(EVENTS)


def test_a_co_purchase_ties_items_closer_than_a_co_view():
    # x is viewed with y in two sessions and bought with z in two: z is the closer neighbour.
    events = [
        *basket("u1", "s1", "x", "y"), *basket("u2", "s2", "x", "y"),
        *basket("u3", "s3", "x", "z", etype=PURCHASE),
        ev("u4", "s4", "x", T0, ADD_TO_CART), ev("u4", "s4", "z", T0, ADD_TO_CART),
        ev("u4", "s4", "x", T0 + 1, PURCHASE), ev("u4", "s4", "z", T0 + 1, PURCHASE),
    ]
    # x = [1, 1, 5, 5], y = [1, 1, 0, 0], z = [0, 0, 5, 5] over the four sessions.
    assert neighbours_of(train(events, 5), "x") == [
        ("z", round(50 / math.sqrt(52 * 50), 4)), ("y", round(2 / math.sqrt(52 * 2), 4))
    ]


def test_duplicate_event_ids_count_once():
    once = train(basket("u1", "s1", "a", "b") + basket("u2", "s2", "a", "b"))
    twice = train(basket("u1", "s1", "a", "b") * 3 + basket("u2", "s2", "a", "b"))
    np.testing.assert_array_equal(once.pop_scores, twice.pop_scores)
    assert once.events == twice.events == 4


def test_large_baskets_are_capped():
    pids = [f"p{i:03d}" for i in range(30)]
    events = basket("u1", "s1", *pids) + basket("u2", "s2", *pids)
    capped = train(events, neighbours=50, max_basket_items=10)
    linked = (capped.nbr_idx >= 0).sum(axis=1)
    assert linked.max() == 9 and (linked > 0).sum() == 10


def test_pairs_expanded_in_chunks_give_the_same_model(monkeypatch):
    whole = train(EVENTS, neighbours=3, min_support=1)
    monkeypatch.setattr("transforms.recommend.PAIR_CHUNK", 5)     # a chunk per basket or so
    chunked = train(EVENTS, neighbours=3, min_support=1)
    np.testing.assert_array_equal(whole.nbr_idx, chunked.nbr_idx)
    np.testing.assert_array_equal(whole.nbr_score, chunked.nbr_score)


def test_popularity_is_recent_weighted_per_category_and_global():
    events = [ev("u1", "s1", "old", T0 - 14 * DAY), ev("u2", "s2", "old", T0 - 14 * DAY),
              ev("u3", "s3", "new", T0, category="hats")]
    m = train(events, popularity_half_life=7 * DAY)
    ids = m.item_ids.tolist()
    assert [ids[i] for i in m.pop_items] == ["new", "old"]       # 1.0 beats 2 * 0.25
    assert m.pop_scores.tolist() == [1.0, 0.5]
    cats = m.categories.tolist()
    hats = cats.index("hats")
    assert [ids[i] for i in m.cat_items[m.cat_ptr[hats]:m.cat_ptr[hats + 1]]] == ["new"]


def test_recommends_neighbours_then_category_then_global_popularity(model):
    r = Recommender(model)
    got = r.recommend(["a"], ["hats"], exclude=(), k=6)
    assert [pid for pid, _ in got] == ["b", "c", "h3", "h1", "h2", "d"]
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    assert got[0] == ("b", 1.0)
    assert all(s == round(s, 6) for s in scores)


def test_cold_start_customer_gets_category_popularity(model):
    got = Recommender(model).recommend(["unknown"], ["hats"], exclude=["h3"], k=2)
    # h3 (3 views) is excluded; h1 and h2 tie (2 views each): by product_id, relative to h3.
    assert got == [("h1", 0.666667), ("h2", 0.666667)]


def test_never_returns_seeds_or_excluded_items(model):
    got = Recommender(model).recommend(["a", "b"], ["shoes"], exclude={"c"}, k=10)
    ids = [pid for pid, _ in got]
    assert not {"a", "b", "c"} & set(ids)
    assert len(ids) == len(set(ids)) == len(model.item_ids) - 3


def test_k_of_zero_or_less_is_empty(model):
    assert Recommender(model).recommend(["a"], [], (), 0) == []
    assert Recommender(None).recommend(["a"], [], (), -1) == []


def test_without_a_model_the_customers_own_seeds_stand_in():
    for r in (Recommender(None), Recommender(Model.empty())):
        got = r.recommend(["s3", "s1", "s3", "s2", "s4"], ["shoes"], exclude={"s1"}, k=2)
        assert got == [("s3", 1.0), ("s2", 0.5)]


@settings(max_examples=100, deadline=None)
@given(
    seeds=st.lists(st.sampled_from(["a", "b", "c", "d", "h1", "h2", "h3", "zz"]), max_size=5),
    categories=st.lists(st.sampled_from(["shoes", "hats", "none"]), max_size=3),
    exclude=st.sets(st.sampled_from(["a", "b", "c", "d", "h1", "h2", "h3"])),
    k=st.integers(min_value=0, max_value=10),
    with_model=st.booleans(),
)
def test_recommendation_properties(seeds, categories, exclude, k, with_model):
    r = Recommender(MODEL if with_model else None)
    got = r.recommend(seeds, categories, exclude, k)
    ids = [pid for pid, _ in got]
    assert len(got) <= k
    assert len(ids) == len(set(ids))
    assert not set(ids) & set(exclude)
    if with_model:
        assert not set(ids) & set(seeds)
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    assert got == r.recommend(list(seeds), list(categories), set(exclude), k)


def test_save_and_load_round_trip(tmp_path, model):
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Model.load(path)
    for name in ("item_ids", "item_category", "nbr_idx", "nbr_score", "categories",
                 "cat_ptr", "cat_items", "cat_scores", "pop_items", "pop_scores"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert (loaded.trained_until, loaded.events) == (model.trained_until, model.events)
    r1, r2 = Recommender(model), Recommender(loaded)
    assert r1.recommend(["a"], ["hats"], (), 5) == r2.recommend(["a"], ["hats"], (), 5)
    assert list(tmp_path.iterdir()) == [path]                   # no temp file left behind


def test_empty_model_round_trip(tmp_path):
    Model.empty().save(tmp_path / "empty.npz")
    assert Model.load(tmp_path / "empty.npz").is_empty


def test_load_refuses_pickles_and_foreign_files(tmp_path, model):
    model.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        arrays = dict(z)
    arrays["item_ids"] = np.array([{"x": 1}] * len(model.item_ids), dtype=object)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **arrays)                     # object array: stored as a pickle
    with pytest.raises(ValueError, match="allow_pickle"):
        Model.load(pickled)
    arrays["item_ids"] = model.item_ids
    arrays["nbr_idx"] = np.full_like(model.nbr_idx, 99)
    np.savez(tmp_path / "bad_index.npz", **arrays)
    with pytest.raises(ValueError, match="index out of range"):
        Model.load(tmp_path / "bad_index.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a recommendation model"):
        Model.load(foreign)


def test_split_by_time_never_splits_an_instant():
    events = [ev("u", "s", f"p{i}", T0 + (i // 2) * MINUTE) for i in range(10)]
    earlier, later = split_by_time(reversed(events), 0.25)
    assert max(e.occurred_at for e in earlier) < min(e.occurred_at for e in later)
    assert len(earlier) + len(later) == 10 and len(later) == 4   # cut at i = 7 -> instant 3


def test_evaluate_counts_new_holdout_items_found_in_the_top_k(model):
    earlier = [ev("u9", "s9", "a", T0)]
    later = [ev("u9", "s9", "b", T0 + MINUTE), ev("u9", "s9", "zz", T0 + MINUTE),
             ev("u9", "s9", "a", T0 + MINUTE),      # a re-visit is not a target
             ev("nobody", "sx", "b", T0 + MINUTE)]  # no earlier history: not evaluated
    result = evaluate(Recommender(model), earlier, later, k=1)
    assert (result.customers, result.recall, result.hit_rate) == (1, 0.5, 1.0)


def test_on_the_shipped_data_cf_beats_the_popularity_baseline():
    assert SHIPPED.is_file(), f"shipped sample missing: {SHIPPED} (see shared/data/README.md)"
    events = [e for e in read_rees46(SHIPPED, synthesize_profiles=False)
              if isinstance(e, BehaviourEvent)]
    earlier, later = split_by_time(events, 0.2)
    m = train(earlier)
    cf = evaluate(Recommender(m), earlier, later, 10)
    popularity = evaluate(Recommender(m.popularity_only()), earlier, later, 10)
    assert cf.customers == popularity.customers > 300
    assert cf.recall > popularity.recall
