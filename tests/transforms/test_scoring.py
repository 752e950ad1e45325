import math

import pytest

from tests.builders import HOUR, T0
from transforms.scoring import (
    COMPONENTS,
    DEFAULT_PARAMS,
    ScoringParams,
    component_vector,
    engagement_components,
    engagement_score,
)
from transforms.settings import DAY
from transforms.windows import Features


def features(**kw: object) -> Features:
    return Features(as_of=T0, **kw)  # type: ignore[arg-type]


ACTIVE = features(
    views_1h={"shoes": 3}, views_24h={"shoes": 8, "hats": 2}, cart_adds_24h=1, purchases_30d=2,
    revenue_30d=180.0, sessions_7d=3, email_opens_30d=4, email_clicks_30d=1,
    last_activity_at=T0 - HOUR,
)


def test_a_customer_never_seen_scores_zero():
    assert engagement_score(features(), T0) == 0.0


def test_score_stays_within_0_and_100_at_the_extremes():
    huge = features(
        views_24h={"x": 10**9}, cart_adds_24h=10**9, purchases_30d=10**9, revenue_30d=1e15,
        sessions_7d=10**9, email_opens_30d=10**9, email_clicks_30d=10**9, last_activity_at=T0,
    )
    assert 95.0 < engagement_score(huge, T0) <= 100.0


def test_garbage_counts_count_as_zero():
    bad = features(revenue_30d=float("nan"), purchases_30d=-3, sessions_7d=-1,
                   views_24h={"x": -5})
    assert engagement_score(bad, T0) == 0.0


def test_hand_computed_score_of_an_active_customer():
    p = DEFAULT_PARAMS
    recency = 0.5 ** ((HOUR / DAY) / p.recency_half_life_days)
    sat = [3 / (3 + 2), 10 / (10 + 10), 1 / (1 + 1), 2 / (2 + 1),
           math.log1p(180) / (math.log1p(180) + math.log1p(100)), 4 / (4 + 2), 1 / (1 + 1)]
    expected = 100 * sum(w * c for w, c in zip(p.weights, [recency, *sat], strict=True))
    assert engagement_score(ACTIVE, T0) == round(expected, 2)


def test_recency_halves_every_half_life_and_future_activity_counts_as_now():
    half = DEFAULT_PARAMS.recency_half_life_days * DAY
    f = features(last_activity_at=T0)
    assert component_vector(f, T0)[0] == 1.0
    assert component_vector(f, T0 + int(half))[0] == pytest.approx(0.5)
    assert component_vector(features(last_activity_at=T0 + HOUR), T0)[0] == 1.0


def test_more_behaviour_never_lowers_the_score_and_staleness_lowers_it():
    base = engagement_score(ACTIVE, T0)
    for change in ({"sessions_7d": 9}, {"purchases_30d": 5}, {"revenue_30d": 900.0},
                   {"email_clicks_30d": 3}, {"cart_adds_24h": 4}):
        assert engagement_score(features(**{**_fields(ACTIVE), **change}), T0) > base
    assert engagement_score(ACTIVE, T0 + 10 * DAY) < base


def test_deterministic_and_rounded_to_two_decimals():
    scores = {engagement_score(ACTIVE, T0) for _ in range(5)}
    assert len(scores) == 1
    (score,) = scores
    assert score == round(score, 2)


def test_components_split_the_score_into_four_parts():
    parts = engagement_components(ACTIVE, T0)
    assert set(parts) == {"recency", "frequency", "monetary", "email", "score"}
    assert parts["score"] == engagement_score(ACTIVE, T0)
    total = parts["recency"] + parts["frequency"] + parts["monetary"] + parts["email"]
    assert total == pytest.approx(parts["score"], abs=0.03)


def test_weights_must_be_a_distribution_over_the_components():
    with pytest.raises(ValueError):
        ScoringParams(weights=(0.5, 0.5))
    with pytest.raises(ValueError):
        ScoringParams(weights=(1.0,) * len(COMPONENTS))
    only_recency = ScoringParams(weights=(1.0,) + (0.0,) * (len(COMPONENTS) - 1))
    assert engagement_score(features(last_activity_at=T0), T0, only_recency) == 100.0


def _fields(f: Features) -> dict[str, object]:
    return {name: getattr(f, name) for name in Features.__slots__ if name != "as_of"}


def test_batch_scores_match_one_by_one():
    from transforms.scoring import engagement_scores

    batch = [features(last_activity_at=T0 - i * HOUR) for i in range(5)]
    assert engagement_scores(batch, T0).tolist() == [engagement_score(f, T0) for f in batch]
    assert engagement_scores([], T0).shape == (0,)
