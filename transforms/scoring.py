"""Engagement score of a customer, 0-100, from their windowed behaviour (DESIGN.md section 4).

    Features (as of some time), now (epoch ms) -> float in [0, 100], 2 decimals

The score is a weighted sum of saturating transforms, each in [0, 1):

    recency    r = 0.5 ** (days since last activity / recency_half_life_days)   (0 if never seen)
    counts     s(x, h) = x / (x + h)          half-saturation h: s(h, h) = 0.5, s(inf, h) -> 1
    revenue    s(log1p(revenue), log1p(revenue_half))

    score = 100 * w . [r, s(sessions_7d), s(views_24h), s(cart_adds_24h), s(purchases_30d),
                       s(log revenue_30d), s(email_opens_30d), s(email_clicks_30d)]

with w >= 0 summing to 1, grouped as recency 0.25, frequency 0.30 (sessions, views, cart adds),
monetary 0.25 (purchases, revenue) and email engagement 0.20 (opens, clicks). Why saturating:
the tenth session in a week says much less than the first, and a single big spender must not
swamp everything else. Revenue is log-compressed first because money is heavy-tailed.

Deterministic (no randomness, no wall clock: `now` is data) and cheap (eight floats per
customer; `engagement_scores` does many customers as one numpy product).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from transforms.settings import DAY
from transforms.windows import Features

# Component order of the vectors below; `GROUPS` maps the score's four parts onto it.
COMPONENTS = (
    "recency", "sessions", "views", "cart_adds", "purchases", "revenue", "opens", "clicks",
)
GROUPS = {
    "recency": ("recency",),
    "frequency": ("sessions", "views", "cart_adds"),
    "monetary": ("purchases", "revenue"),
    "email": ("opens", "clicks"),
}


@dataclass(frozen=True, slots=True)
class ScoringParams:
    """The formula's constants: weights per component and the half-saturation points."""

    weights: tuple[float, ...] = (0.25, 0.15, 0.10, 0.05, 0.15, 0.10, 0.08, 0.12)
    recency_half_life_days: float = 3.0
    sessions_half: float = 2.0        # sessions in 7 d
    views_half: float = 10.0          # product views in 24 h, all categories
    cart_adds_half: float = 1.0       # cart adds in 24 h
    purchases_half: float = 1.0       # purchases in 30 d
    revenue_half: float = 100.0       # revenue in 30 d, before log1p
    opens_half: float = 2.0           # email opens in 30 d
    clicks_half: float = 1.0          # email clicks in 30 d
    _w: np.ndarray = field(init=False, repr=False, compare=False)
    _half: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (len(COMPONENTS),) or np.any(w < 0) or not math.isclose(w.sum(), 1.0):
            raise ValueError(f"weights: {len(COMPONENTS)} non-negative numbers summing to 1")
        object.__setattr__(self, "_w", w)
        half = (
            self.sessions_half, self.views_half, self.cart_adds_half, self.purchases_half,
            math.log1p(self.revenue_half), self.opens_half, self.clicks_half,
        )
        object.__setattr__(self, "_half", half)


DEFAULT_PARAMS = ScoringParams()


def _count(x: float) -> float:
    """A count or amount as a finite non-negative float (bad values count as 0)."""
    x = float(x)
    return x if 0.0 < x < _INF else 0.0  # NaN and the infinities fail the comparison


_INF = math.inf


def component_vector(f: Features, now: int, params: ScoringParams = DEFAULT_PARAMS) -> list[float]:
    """The eight saturating transforms of `f` at `now`, each in [0, 1), in `COMPONENTS` order.

    Plain floats, written out: this runs for one customer at a time on the stream's hot path
    (every feature snapshot), where numpy arrays for eight numbers, or generic loops over
    them, cost more than the arithmetic.
    """
    p = params
    last = f.last_activity_at
    if last is None:
        recency = 0.0
    else:
        days = (now - last if now > last else 0) / DAY  # activity "after" now counts as now
        recency = 0.5 ** (days / p.recency_half_life_days)
    h = p._half
    sessions = _count(f.sessions_7d)
    views = _count(sum(f.views_24h.values()))
    carts = _count(f.cart_adds_24h)
    purchases = _count(f.purchases_30d)
    revenue = math.log1p(_count(f.revenue_30d))
    opens = _count(f.email_opens_30d)
    clicks = _count(f.email_clicks_30d)
    return [
        recency,
        sessions / (sessions + h[0]),
        views / (views + h[1]),
        carts / (carts + h[2]),
        purchases / (purchases + h[3]),
        revenue / (revenue + h[4]),
        opens / (opens + h[5]),
        clicks / (clicks + h[6]),
    ]


def engagement_score(f: Features, now: int, params: ScoringParams = DEFAULT_PARAMS) -> float:
    """Engagement 0-100 of a customer with features `f` at event time `now` (ms), 2 decimals."""
    return score_of(component_vector(f, now, params), params)


def score_of(c: list[float], params: ScoringParams = DEFAULT_PARAMS) -> float:
    """The engagement score of a `component_vector` (the core keeps the vector for segments)."""
    w = params.weights
    raw = 100.0 * (
        w[0] * c[0] + w[1] * c[1] + w[2] * c[2] + w[3] * c[3]
        + w[4] * c[4] + w[5] * c[5] + w[6] * c[6] + w[7] * c[7]
    )
    return round(min(100.0, max(0.0, raw)), 2)


def engagement_scores(
    features: Sequence[Features], now: int, params: ScoringParams = DEFAULT_PARAMS
) -> np.ndarray:
    """Scores of many customers at once (batch jobs, benchmarks): one matrix product."""
    if not features:
        return np.zeros(0)
    matrix = np.array([component_vector(f, now, params) for f in features])
    return np.clip(np.round(100.0 * matrix @ params._w, 2), 0.0, 100.0)


def engagement_components(
    f: Features, now: int, params: ScoringParams = DEFAULT_PARAMS
) -> dict[str, float]:
    """The score's four parts in points (recency, frequency, monetary, email), plus the total.

    For the feature store: the parts sum to `score` up to the 2-decimal rounding of each.
    """
    vector = component_vector(f, now, params)
    by_name = {c: 100.0 * w * v for c, w, v in zip(COMPONENTS, params.weights, vector, strict=True)}
    parts = {g: round(sum(by_name[c] for c in names), 2) for g, names in GROUPS.items()}
    parts["score"] = engagement_score(f, now, params)
    return parts
