"""Segments (transforms/segments.py): RFM, lifecycle, tier and cluster at named instants and
exactly at their cut points; trigger limits (format, errors, semantics); k-means and silhouette
on synthetic blobs; the segment model in the model file (older files still load)."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from tests.builders import T0, add, profile, view
from tests.transforms.drive import decisions, drive
from transforms.core import Core
from transforms.model import FEATURES, PAYLOAD
from transforms.recommend import Model
from transforms.segments import (
    ACTIVE,
    AT_RISK,
    HIGH,
    LAPSED,
    LOW,
    MEDIUM,
    NEW,
    Segment,
    SegmentLimits,
    SegmentModel,
    SegmentRules,
    fit_segments,
    parse_edges,
    segment_of,
    silhouette,
)
from transforms.settings import DAY, HOUR, MINUTE, CoreSettings, SettingsError
from transforms.windows import Features

SETTINGS = CoreSettings()
RULES = SegmentRules(SETTINGS)
AT_RISK_AFTER = SETTINGS.lifecycle_at_risk_after  # 7 d
LAPSED_AFTER = SETTINGS.lifecycle_lapsed_after    # 21 d
ZERO = [0.0] * 8


def features(
    last: int | None = T0, sessions: int = 2, purchases: int = 0, revenue: float = 0.0
) -> Features:
    return Features(T0, sessions_7d=sessions, purchases_30d=purchases, revenue_30d=revenue,
                    last_activity_at=last)


def seg(f: Features, t: int = T0, score: float = 40.0, stage: str | None = None,
        rules: SegmentRules = RULES, components: list[float] = ZERO) -> Segment:
    return segment_of(f, t, score, components, stage, rules)


# ------------------------------------------------------------------ lifecycle


def test_lifecycle_at_risk_starts_exactly_at_its_threshold():
    last = T0
    assert seg(features(last), t=last + AT_RISK_AFTER - 1).lifecycle == ACTIVE
    assert seg(features(last), t=last + AT_RISK_AFTER).lifecycle == AT_RISK
    assert seg(features(last), t=last + AT_RISK_AFTER + 1).lifecycle == AT_RISK


def test_lifecycle_lapsed_starts_exactly_at_its_threshold():
    last = T0
    assert seg(features(last), t=last + LAPSED_AFTER - 1).lifecycle == AT_RISK
    assert seg(features(last), t=last + LAPSED_AFTER).lifecycle == LAPSED
    assert seg(features(last), t=last + 30 * DAY).lifecycle == LAPSED


def test_new_is_at_most_one_session_in_7_days_and_no_purchase():
    assert seg(features(sessions=1)).lifecycle == NEW
    assert seg(features(sessions=0)).lifecycle == NEW
    assert seg(features(sessions=2)).lifecycle == ACTIVE
    assert seg(features(sessions=1, purchases=1, revenue=10.0)).lifecycle == ACTIVE


def test_no_activity_held_is_new_and_the_crm_stage_is_reported_apart():
    s = seg(features(last=None, sessions=0), stage="Churned")
    assert s.lifecycle == NEW and s.crm_stage == "churned" and s.r == 1


def test_a_quiet_new_customer_turns_at_risk_by_recency_first():
    assert seg(features(sessions=1), t=T0 + AT_RISK_AFTER).lifecycle == AT_RISK


def test_lifecycle_thresholds_are_validated():
    for at_risk, lapsed in ((0, DAY), (7 * DAY, 7 * DAY), (7 * DAY, 31 * DAY)):
        bad = CoreSettings(lifecycle_at_risk_after=at_risk, lifecycle_lapsed_after=lapsed)
        with pytest.raises(SettingsError, match="lifecycle"):
            SegmentRules(bad)


# ------------------------------------------------------------------ tier


def test_tier_cut_points_belong_to_the_upper_tier():
    medium, high = SETTINGS.tier_medium_from, SETTINGS.tier_high_from
    assert seg(features(), score=medium - 0.01).engagement_tier == LOW
    assert seg(features(), score=medium).engagement_tier == MEDIUM
    assert seg(features(), score=high - 0.01).engagement_tier == MEDIUM
    assert seg(features(), score=high).engagement_tier == HIGH
    assert seg(features(), score=0.0).engagement_tier == LOW
    assert seg(features(), score=100.0).engagement_tier == HIGH


def test_tier_cuts_must_be_ordered():
    with pytest.raises(SettingsError, match="tier_medium_from"):
        SegmentRules(CoreSettings(tier_medium_from=60.0, tier_high_from=50.0))


# ------------------------------------------------------------------ RFM


def test_rfm_default_edges_a_value_at_an_edge_is_in_the_lower_quintile():
    # R edges 1,3,7,14 days: exactly 1 day idle is still the most recent quintile.
    assert seg(features(T0 - DAY)).r == 5
    assert seg(features(T0 - DAY - 1)).r == 4
    assert seg(features(T0 - 14 * DAY)).r == 2
    assert seg(features(T0 - 14 * DAY - 1)).r == 1
    assert seg(features(T0)).r == 5
    # F edges 1,2,3,5 sessions.
    assert [seg(features(sessions=n)).f for n in (0, 1, 2, 3, 5, 6)] == [1, 1, 2, 3, 4, 5]
    # M edges 0,50,150,500 of revenue.
    ms = [seg(features(revenue=v)).m for v in (0.0, 0.01, 50.0, 150.01, 500.0, 500.01)]
    assert ms == [1, 2, 2, 4, 4, 5]
    assert seg(features(sessions=3, revenue=200.0)).rfm == "534"


def test_rfm_edges_of_the_model_replace_the_defaults():
    model = SegmentModel(np.array([[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 1], [0, 0, 10, 20]], float),
                         np.zeros(8), np.ones(8), np.zeros((0, 8)))
    rules = SegmentRules(SETTINGS, model)
    s = seg(features(T0 - DAY // 4, sessions=1, revenue=15.0), rules=rules)
    assert (s.r, s.f, s.m) == (3, 4, 4) and s.cluster is None  # no centroids, no cluster


@pytest.mark.parametrize("text", ["", "1,2,3", "1,2,3,4,5", "3,2,1,0", "a,b,c,d", "1,2,3,inf",
                                  "1;2;3;4"])
def test_bad_default_edges_say_what_to_fix(text):
    with pytest.raises(SettingsError, match="4 ascending numbers"):
        parse_edges("core.rfm_recency_edges", text)
    with pytest.raises(SettingsError, match="rfm_monetary_edges"):
        SegmentRules(CoreSettings(rfm_monetary_edges=text))


# ------------------------------------------------------------------ cluster


def _model(centroids: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> SegmentModel:
    edges = np.tile(np.array([1.0, 2.0, 3.0, 4.0]), (3, 1))
    return SegmentModel(edges, mean, scale, centroids)


def test_nearest_centroid_matches_the_standardized_distance_of_numpy():
    rng = np.random.default_rng(5)
    mean, scale = rng.random(8), rng.random(8) + 0.1
    centroids = rng.normal(size=(5, 8))
    rules = SegmentRules(SETTINGS, _model(centroids, mean, scale))
    for _ in range(300):
        x = rng.random(8) * (rng.random(8) < 0.5)  # sparse, as real components are
        z = (x - mean) / scale
        expected = int(((z - centroids) ** 2).sum(axis=1).argmin())
        assert rules.cluster(x.tolist()) == expected


def test_no_model_no_cluster():
    assert seg(features(), components=[1.0] * 8).cluster is None


# ------------------------------------------------------------------ trigger limits


KNOWN = ["cart_abandonment", "browse_intensity"]


def test_limits_and_within_one_trigger_or_within_one_condition():
    limits = SegmentLimits(
        "browse_intensity=lifecycle:active|at_risk, tier:high ; cart_abandonment=r:4|5", KNOWN
    )
    active_high = Segment(5, 1, 1, ACTIVE, HIGH, None, None)
    at_risk_low = Segment(2, 1, 1, AT_RISK, LOW, None, None)
    assert limits.allows("browse_intensity", active_high)
    assert not limits.allows("browse_intensity", at_risk_low)       # tier fails
    assert not limits.allows("browse_intensity", active_high._replace(lifecycle=NEW))
    assert limits.allows("cart_abandonment", active_high)
    assert not limits.allows("cart_abandonment", at_risk_low)       # r = 2
    assert limits.allows("price_drop", at_risk_low)                 # not limited
    assert limits.allows("browse_intensity", None)                  # no segment: not here


def test_cluster_and_crm_limits():
    limits = SegmentLimits("browse_intensity=cluster:0|2,crm:customer", KNOWN)
    s = Segment(5, 1, 1, ACTIVE, HIGH, 2, "customer")
    assert limits.allows("browse_intensity", s)
    assert not limits.allows("browse_intensity", s._replace(cluster=None))
    assert not limits.allows("browse_intensity", s._replace(crm_stage="lead"))
    spaced = SegmentLimits("browse_intensity=crm:key account|lead", KNOWN)
    stage = seg(features(), stage="  Key\tACCOUNT ").crm_stage
    assert stage == "key account" and spaced.allows("browse_intensity", s._replace(crm_stage=stage))
    limits.check_clusters(3)
    with pytest.raises(SettingsError, match="names cluster 2, the model has clusters 0-1"):
        limits.check_clusters(2)
    with pytest.raises(SettingsError, match="no trained model"):
        limits.check_clusters(0)


def test_no_limits_is_falsy():
    assert not SegmentLimits("", KNOWN) and not SegmentLimits(" ; ", KNOWN)


@pytest.mark.parametrize("text, problem", [
    ("browse_intensity", "does not start with a trigger type"),
    ("=tier:high", "does not start with a trigger type"),
    ("Browse_Intensity=tier:high", "does not start with a trigger type"),
    ("browse_intensity=", "is not dimension:value"),
    ("browse_intensity=tier", "is not dimension:value"),
    ("browse_intensity=tier:", "is not dimension:value"),
    ("browse_intensity=colour:red", "unknown dimension 'colour'"),
    ("browse_intensity=tier:top", "'top' is not a value of tier"),
    ("browse_intensity=lifecycle:active|", "'' is not a value of lifecycle"),
    ("browse_intensity=r:6", "'6' is not a value of r"),
    ("browse_intensity=r:0", "'0' is not a value of r"),
    ("browse_intensity=cluster:-1", "'-1' is not a value of cluster"),
    ("browse_intensity=cluster:١", "is not a value of cluster"),
    ("browse_intensity=crm:<b>", "'<b>' is not a value of crm"),
    ("browse=tier:high", "unknown trigger type 'browse' (known: cart_abandonment"),
    ("browse_intensity=tier:high;browse_intensity=tier:low", "given twice"),
])
def test_bad_limits_say_what_to_fix(text, problem):
    with pytest.raises(SettingsError) as err:
        SegmentLimits(text, KNOWN)
    message = str(err.value)
    assert message.startswith("core.trigger_segments: ") and problem in message
    assert "format: trigger=dimension:value|value" in message


# ------------------------------------------------------------------ training


def blobs(seed: int = 1, per: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated blobs in 8 dimensions, and which blob each row is from."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * 8, [1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4])
    rows = np.concatenate([c + rng.normal(scale=0.05, size=(per, 8)) for c in centres])
    return rows, np.repeat(np.arange(3), per)


def test_kmeans_recovers_blobs_and_beats_the_random_baseline():
    x, truth = blobs()
    rfm = np.zeros((len(x), 3))
    fit = fit_segments(rfm, x, k=3, seed=0)
    # The same partition as the blobs, up to the numbering of the clusters.
    pairs = {(int(a), int(b)) for a, b in zip(fit.labels, truth, strict=True)}
    assert len(pairs) == 3 and len({a for a, _ in pairs}) == 3
    assert fit.silhouette is not None and fit.random_silhouette is not None
    assert fit.silhouette > 0.8 and fit.random_silhouette < 0.1
    # In-stream assignment (folded standardization) agrees with the training labels.
    rules = SegmentRules(SETTINGS, fit.model)
    assert [rules.cluster(row.tolist()) for row in x] == fit.labels.tolist()


def test_kmeans_is_deterministic_for_a_seed():
    x, _ = blobs(seed=2)
    a = fit_segments(np.zeros((len(x), 3)), x, k=4, seed=7)
    b = fit_segments(np.zeros((len(x), 3)), x, k=4, seed=7)
    assert np.array_equal(a.model.centroids, b.model.centroids)
    assert np.array_equal(a.labels, b.labels)


def test_k_is_cut_to_the_distinct_points_and_zero_customers_fit_nothing():
    x = np.array([[1.0] * 8, [1.0] * 8, [0.0] * 8])
    fit = fit_segments(np.zeros((3, 3)), x, k=5)
    assert len(fit.model.centroids) == 2
    empty = fit_segments(np.zeros((0, 3)), np.zeros((0, 8)), k=4)
    assert len(empty.model.centroids) == 0 and empty.silhouette is None
    assert empty.model.rfm_edges.tolist() == [[0.0] * 4] * 3


def test_rfm_edges_are_the_quintiles_and_ignore_no_activity():
    rfm = np.array([[d, float(d), 10.0 * d] for d in range(1, 11)] + [[np.inf, 0.0, 0.0]])
    fit = fit_segments(rfm, np.zeros((11, 8)), k=0)
    assert fit.model.rfm_edges[0].tolist() == pytest.approx([2.8, 4.6, 6.4, 8.2])
    assert len(fit.model.centroids) == 0


def test_silhouette_by_hand():
    # Two pairs on a line: 0, 1 | 10, 11. For 0: a = 1, b = (10 + 11) / 2 = 10.5.
    z = np.array([[0.0], [1.0], [10.0], [11.0]])
    s = silhouette(z, np.array([0, 0, 1, 1]))
    by_hand = [(10.5 - 1) / 10.5, (9.5 - 1) / 9.5, (9.5 - 1) / 9.5, (10.5 - 1) / 10.5]
    assert s == pytest.approx(sum(by_hand) / 4)
    assert silhouette(z, np.array([0, 0, 0, 0])) is None
    # A point alone in its cluster counts 0.
    # 1: a = (9 + 10) / 2, b = 1; 10: a = (9 + 1) / 2, b = 10; 11: a = (10 + 1) / 2, b = 11.
    alone = [0.0, (1 - 9.5) / 9.5, (10 - 5) / 10, (11 - 5.5) / 11]
    assert silhouette(z, np.array([0, 1, 1, 1])) == pytest.approx(sum(alone) / 4)


# ------------------------------------------------------------------ the model file


def _tiny_recommender() -> Model:
    return Model.empty()


def test_model_file_round_trips_the_segment_model(tmp_path):
    x, _ = blobs()
    fit = fit_segments(np.ones((len(x), 3)), x, k=3)
    path = tmp_path / "m.npz"
    replace(_tiny_recommender(), segments=fit.model).save(path)
    loaded = Model.load(path).segments
    assert loaded is not None
    for name in SegmentModel.ARRAYS:
        assert np.array_equal(getattr(loaded, name), getattr(fit.model, name))


def test_a_model_file_written_before_segments_still_loads(tmp_path):
    # The arrays and meta of the format as it was, without any seg_* array.
    old = Model.empty()
    arrays = {n: getattr(old, n) for n in (
        "item_ids", "item_category", "nbr_idx", "nbr_score", "categories", "cat_ptr",
        "cat_items", "cat_scores", "pop_items", "pop_scores")}
    arrays["meta"] = np.array([1, 0, 0], np.int64)
    path = tmp_path / "old.npz"
    np.savez_compressed(path, **arrays)
    model = Model.load(path)
    assert model.segments is None and model.is_empty
    assert SegmentRules(SETTINGS, model.segments).cluster([1.0] * 8) is None


def test_an_incomplete_or_broken_segment_model_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    arrays = {"seg_rfm_edges": np.zeros((3, 4)), "seg_mean": np.zeros(8)}
    with pytest.raises(ValueError, match="incomplete"):
        SegmentModel.from_arrays(arrays)
    arrays.update(seg_scale=np.zeros(8), seg_centroids=np.zeros((2, 8)))  # scale 0
    with pytest.raises(ValueError, match="inconsistent segment model"):
        SegmentModel.from_arrays(arrays)
    arrays.update(seg_scale=np.ones(8), seg_rfm_edges=np.array([[3.0, 2, 1, 0]] * 3))
    with pytest.raises(ValueError, match="inconsistent segment model"):
        SegmentModel.from_arrays(arrays)
    assert not path.exists()


# ------------------------------------------------------------------ in the core


def _browse_journey(cid: str = "c1", stage: str | None = "Customer") -> list:

    items: list = [replace(profile(cid=cid), lifecycle_stage=stage)]
    items += [view(T0 + i * MINUTE, f"s{i}", "shoes", cid=cid)
              for i in range(5)]
    return items


def test_the_payload_and_the_snapshot_at_the_fire_carry_the_segment():
    fired_at = T0 + 4 * MINUTE
    _, out = drive(Core(), _browse_journey(), T0 + HOUR)
    (payload,) = [p for kind, p in out if kind == PAYLOAD]
    s = payload.segment
    # One session, no purchase: new; active a second ago; score of a fresh browser: medium.
    assert (s.lifecycle, s.r, s.f, s.m, s.crm_stage, s.cluster) == (NEW, 5, 1, 1, "customer", None)
    assert s.engagement_tier == (HIGH if payload.engagement_score >= 55 else
                                 MEDIUM if payload.engagement_score >= 35 else LOW)
    at_fire = [f for kind, f in out if kind == FEATURES and f.as_of == fired_at]
    assert at_fire and at_fire[0].features["lifecycle"] == NEW
    assert at_fire[0].features["rfm_r"] == 5 and at_fire[0].features["crm_stage"] == "customer"
    assert "Welcome to Example Shop" in payload.html  # the new-customer note
    assert "Welcome to Example Shop" in payload.text


def test_a_trigger_limited_to_other_segments_is_suppressed_with_its_audit():
    limited = Core(CoreSettings(trigger_segments="browse_intensity=lifecycle:active|at_risk"))
    _, out = drive(limited, _browse_journey(), T0 + HOUR)
    assert decisions(out) == [("browse_intensity", "shoes", T0 + 4 * MINUTE, "suppressed:segment")]
    assert not [p for kind, p in out if kind == PAYLOAD]
    # The same customer in the allowed segment goes on.
    allowed = Core(CoreSettings(trigger_segments="browse_intensity=lifecycle:new,crm:customer"))
    _, out = drive(allowed, _browse_journey(), T0 + HOUR)
    assert decisions(out) == [("browse_intensity", "shoes", T0 + 4 * MINUTE, "emitted")]


def test_the_segment_limit_comes_before_consent_and_takes_no_priority_slot():
    # Cart armed at T0 fires at T0 + 1h, with the fifth shoe view at the same instant: the
    # cart (limited to high-tier customers) is out, so browse intensity is not second.
    limits = "cart_abandonment=tier:high"
    at = T0 + HOUR
    items = [profile(), add(T0, "h1", "hats"),
             *[view(at - (4 - i) * MINUTE, f"s{i}", "shoes") for i in range(5)]]
    _, out = drive(Core(CoreSettings(trigger_segments=limits)), items, T0 + 3 * HOUR)
    got = decisions(out)
    assert sorted(got) == sorted([
        ("cart_abandonment", got[0][1], at, "suppressed:segment"),
        ("browse_intensity", "shoes", at, "emitted"),
    ])
    # Without consent: the limited trigger is audited as out of segment, the other no_consent.
    items[0] = profile(consent=False)
    _, out = drive(Core(CoreSettings(trigger_segments=limits)), items, T0 + 3 * HOUR)
    assert sorted(d[3] for d in decisions(out)) == ["suppressed:no_consent", "suppressed:segment"]


def test_an_unknown_trigger_in_the_limits_fails_when_the_core_is_built():
    with pytest.raises(SettingsError, match="unknown trigger type 'browsing'"):
        Core(CoreSettings(trigger_segments="browsing=tier:high"))


def test_the_core_assigns_clusters_with_a_trained_model():
    x, _ = blobs()
    fit = fit_segments(np.ones((len(x), 3)), x, k=3)
    _, out = drive(Core(segments=fit.model), _browse_journey(), T0 + HOUR)
    (payload,) = [p for kind, p in out if kind == PAYLOAD]
    assert payload.segment.cluster in (0, 1, 2)
    snapshots = [f for kind, f in out if kind == FEATURES]
    assert snapshots and all(f.features["cluster"] in (0, 1, 2) for f in snapshots)


def test_the_rules_pickle_and_still_assign_clusters():
    x, _ = blobs()
    rules = SegmentRules(SETTINGS, fit_segments(np.zeros((len(x), 3)), x, k=3).model)
    again = pickle.loads(pickle.dumps(rules))
    assert [again.cluster(r.tolist()) for r in x] == [rules.cluster(r.tolist()) for r in x]
