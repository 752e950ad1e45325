"""Customer segments, computed in-stream at fire time and in feature snapshots (DESIGN.md s. 10).

    segment_of(Features, t, score, components, crm_stage, SegmentRules) -> Segment
    fit_segments(customers' Features, as_of, k, seed) -> SegmentModel   (`personalize train`)

A Segment is plain values: RFM scores, a behavioural lifecycle stage, an engagement tier, the
nearest k-means cluster and the CRM's own stage. It is a pure function of the customer's
windowed features at the instant (no state of its own) and of the trained model:

    rfm        R, F, M in 1..5: R from days since the last activity (more recent is higher),
               F from sessions in 7 d, M from revenue in 30 d, each against four quintile
               edges: score = 1 + #(edges < x) (R reversed), so x exactly at an edge belongs to
               the lower quintile. Edges come from the trained model (quintiles of the training
               customers as of its end), else from the settings rfm_*_edges. No activity held
               counts as infinitely old (R = 1).
    lifecycle  from what the state holds (its windows reach back 30 d, it keeps no first-seen
               time), in this order:
                   new       no activity held at all (never seen, or not in 30 d: the job
                             cannot tell those apart, the CRM stage below can), or at most
                             lifecycle_new_max_sessions sessions in 7 d and no purchase in 30 d
                   lapsed    last activity >= lifecycle_lapsed_after ago (<= 30 d)
                   at_risk   last activity >= lifecycle_at_risk_after ago
                   active    otherwise
               A trigger caused by activity fires at that activity, so it sees new or active;
               deadline triggers (cart, and those fired days after a purchase) can see the
               others.
    tier       engagement score (0-100) against tier_medium_from / tier_high_from: low, medium,
               high (a score exactly at a cut point is in the upper tier)
    cluster    index of the nearest k-means centroid of the trained model, on the engagement
               score's eight components (transforms/scoring.py: saturating recency, frequency,
               monetary and email transforms) standardized with the model's mean and scale;
               None without a model or without centroids
    crm_stage  the CRM profile's `lifecycle_stage`, reported beside the behavioural stage and
               never mixed with it (its vocabulary is the CRM's: lead, customer, churned...):
               one line, lowercase, at most MAX_CRM_STAGE characters; None when absent

Cost: a handful of comparisons, and for the cluster one multiply-add per non-zero component and
centroid, in one generated straight-line function (the standardization is folded into the
centroids when the model loads: _nearest_function).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from transforms.settings import DAY, CoreSettings, SettingsError
from transforms.sizes import one_line
from transforms.windows import PURCHASE_WINDOW, Features

NEW = "new"
ACTIVE = "active"
AT_RISK = "at_risk"
LAPSED = "lapsed"
LIFECYCLES = (NEW, ACTIVE, AT_RISK, LAPSED)
LOW = "low"
MEDIUM = "medium"
HIGH = "high"
TIERS = (LOW, MEDIUM, HIGH)
MAX_CRM_STAGE = 32
EDGES = 4  # quintile edges per RFM dimension
_NEVER_DAYS = math.inf


class Segment(NamedTuple):
    """A customer's segment at one instant (see the module docstring)."""

    r: int
    f: int
    m: int
    lifecycle: str
    engagement_tier: str
    cluster: int | None
    crm_stage: str | None

    @property
    def rfm(self) -> str:
        """The usual RFM code, e.g. "545"."""
        return f"{self.r}{self.f}{self.m}"

    def context(self) -> dict[str, Any]:
        """Plain strings and ints, for the render context and the payload."""
        return {
            "rfm": self.rfm, "r": self.r, "f": self.f, "m": self.m,
            "lifecycle": self.lifecycle, "engagement_tier": self.engagement_tier,
            "cluster": self.cluster, "crm_stage": self.crm_stage,
        }

    def fields(self) -> dict[str, Any]:
        """Flat feature-store fields (None values are left out by the store)."""
        return {
            "rfm_r": self.r, "rfm_f": self.f, "rfm_m": self.m, "lifecycle": self.lifecycle,
            "engagement_tier": self.engagement_tier, "cluster": self.cluster,
            "crm_stage": self.crm_stage,
        }


# ------------------------------------------------------------------ the trained part


@dataclass(frozen=True, slots=True)
class SegmentModel:
    """What `personalize train` learns for segments; stored in the model file as seg_* arrays.

    rfm_edges  float64 [3, 4]: quintile edges of R (days since last activity), F (sessions in
               7 d) and M (revenue in 30 d), ascending
    mean       float64 [8]: per scoring component, for standardizing
    scale      float64 [8]: per component (> 0; 1 where the training data did not vary)
    centroids  float64 [k, 8]: k-means centroids in standardized space (k may be 0)
    """

    rfm_edges: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    centroids: np.ndarray

    ARRAYS = ("rfm_edges", "mean", "scale", "centroids")

    def validate(self) -> None:
        """Raise ValueError unless shapes and values are usable."""
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        ok = (
            self.rfm_edges.shape == (3, EDGES)
            and bool(np.all(np.diff(self.rfm_edges, axis=1) >= 0))
            and d == 8 and self.scale.shape == (d,) and bool(np.all(self.scale > 0))
            and self.centroids.ndim == 2 and self.centroids.shape[1] == d
            and all(bool(np.all(np.isfinite(a))) for a in
                    (self.rfm_edges, self.mean, self.scale, self.centroids))
        )
        if not ok:
            raise ValueError("inconsistent segment model (seg_* arrays)")

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store, named seg_<name>."""
        return {f"seg_{n}": np.asarray(getattr(self, n), np.float64) for n in self.ARRAYS}

    @staticmethod
    def from_arrays(arrays: Mapping[str, np.ndarray]) -> SegmentModel | None:
        """The model from seg_* arrays, or None when a file has none (written before)."""
        names = [f"seg_{n}" for n in SegmentModel.ARRAYS]
        present = [n for n in names if n in arrays]
        if not present:
            return None
        if len(present) != len(names):
            raise ValueError(f"segment model incomplete: has {present}, needs {names}")
        model = SegmentModel(*(np.asarray(arrays[n], np.float64) for n in names))
        model.validate()
        return model


class SegmentRules:
    """Settings and the trained model, prepared once for `segment_of` (plain floats)."""

    def __init__(self, settings: CoreSettings, model: SegmentModel | None = None) -> None:
        self.at_risk_after = settings.lifecycle_at_risk_after
        self.lapsed_after = settings.lifecycle_lapsed_after
        if not 0 < self.at_risk_after < self.lapsed_after <= PURCHASE_WINDOW:
            raise SettingsError(
                "core.lifecycle_at_risk_after must be > 0 and below core.lifecycle_lapsed_after,"
                f" which must be at most {PURCHASE_WINDOW // DAY}d (the windows' reach)"
            )
        self.new_max_sessions = settings.lifecycle_new_max_sessions
        self.medium_from = settings.tier_medium_from
        self.high_from = settings.tier_high_from
        if not self.medium_from <= self.high_from:
            raise SettingsError("core.tier_medium_from must be <= core.tier_high_from")
        if model is None:
            edges = [
                parse_edges("core.rfm_recency_edges", settings.rfm_recency_edges),
                parse_edges("core.rfm_frequency_edges", settings.rfm_frequency_edges),
                parse_edges("core.rfm_monetary_edges", settings.rfm_monetary_edges),
            ]
        else:
            edges = [tuple(float(v) for v in row) for row in model.rfm_edges.tolist()]
        self.r_edges, self.f_edges, self.m_edges = edges
        self.model = model
        # Nearest centroid of z = (x - mean) / scale: argmin_j ||c_j||^2 - 2 z . c_j, i.e.
        # bias_j + sum_i x_i * w[i][j] with w[i][j] = -2 c_ij / s_i and
        # bias_j = ||c_j||^2 + 2 sum_i mean_i c_ij / s_i.
        self.bias: list[float] = []
        self.weights: list[list[float]] = []
        self._nearest: Callable[[Sequence[float]], int] | None = None
        if model is not None and len(model.centroids):
            c, mu, s = model.centroids, model.mean, model.scale
            self.bias = ((c * c).sum(axis=1) + 2.0 * (c * (mu / s)).sum(axis=1)).tolist()
            self.weights = (-2.0 * c / s).T.tolist()
            self._nearest = _nearest_function(self.bias, self.weights)

    def cluster(self, components: Sequence[float]) -> int | None:
        """The nearest centroid's index (ties: the lowest), None without centroids."""
        nearest = self._nearest
        return None if nearest is None else nearest(components)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_nearest"] = None  # rebuilt from bias and weights
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.bias:
            self._nearest = _nearest_function(self.bias, self.weights)


def _nearest_function(bias: list[float], weights: list[list[float]]) -> Callable[..., int]:
    """argmin_j bias_j + sum_i x_i * weights[i][j] as one straight-line function of x.

    It runs at every snapshot: written out with the model's numbers as constants (generated
    once per model, as collections.namedtuple generates its class) it costs about a fifth of a
    loop over lists. The source holds only float reprs of finite numbers (SegmentModel.validate)
    and small ints, never text from input."""
    if not all(math.isfinite(v) for v in [*bias, *(w for row in weights for w in row)]):
        raise ValueError("segment model: non-finite centroid terms")
    d = len(weights)
    lines = [f"def nearest(x):\n    {', '.join(f'x{i}' for i in range(d))}, = x"]
    lines += [f"    d{j} = {float(b)!r}" for j, b in enumerate(bias)]
    for i in range(d):  # most components of a customer are 0 (no cart, purchase, email...)
        lines.append(f"    if x{i}:")
        lines += [f"        d{j} += x{i} * {float(weights[i][j])!r}" for j in range(len(bias))]
    lines.append("    best = d0\n    j = 0")
    for j in range(1, len(bias)):
        lines.append(f"    if d{j} < best:\n        best = d{j}\n        j = {j}")
    lines.append("    return j")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - numbers only, see the docstring
    nearest: Callable[..., int] = namespace["nearest"]
    return nearest


def parse_edges(name: str, text: str) -> tuple[float, ...]:
    """Four ascending numbers from "1,3,7,14"; SettingsError saying what to fix."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != EDGES or any(b < a for a, b in zip(values, values[1:], strict=False)) \
            or not all(math.isfinite(v) for v in values):
        raise SettingsError(
            f"{name}: want {EDGES} ascending numbers separated by commas, e.g. 1,3,7,14;"
            f" got {text!r}"
        )
    return values


# ------------------------------------------------------------------ in-stream


def segment_of(
    f: Features,
    t: int,
    score: float,
    components: Sequence[float],
    crm_stage: str | None,
    rules: SegmentRules,
) -> Segment:
    """The customer's segment at event time t from their features, score and its components."""
    last = f.last_activity_at
    sessions = f.sessions_7d
    if last is None:  # no activity held: the least recent R, and new (module docstring)
        r = 1
        lifecycle = NEW
    else:
        idle = t - last if t > last else 0
        r = 5 - bisect_left(rules.r_edges, idle / DAY)
        if idle >= rules.lapsed_after:
            lifecycle = LAPSED
        elif idle >= rules.at_risk_after:
            lifecycle = AT_RISK
        elif sessions <= rules.new_max_sessions and not f.purchases_30d:
            lifecycle = NEW
        else:
            lifecycle = ACTIVE
    tier = HIGH if score >= rules.high_from else MEDIUM if score >= rules.medium_from else LOW
    nearest = rules._nearest
    return Segment(
        r,
        1 + bisect_left(rules.f_edges, sessions),
        1 + bisect_left(rules.m_edges, f.revenue_30d),
        lifecycle,
        tier,
        None if nearest is None else nearest(components),
        (one_line(crm_stage).lower()[:MAX_CRM_STAGE] or None) if crm_stage else None,
    )


# ------------------------------------------------------------------ trigger limits

_LIMITS_FORMAT = (
    "trigger=dimension:value|value[,dimension:value...][;trigger=...], dimensions lifecycle "
    f"({'|'.join(LIFECYCLES)}), tier ({'|'.join(TIERS)}), r, f, m (1-5), cluster (0, 1, ...), "
    "crm (the CRM stage); e.g. browse_intensity=lifecycle:active|at_risk;"
    "cart_abandonment=tier:high|medium"
)
_NAME = re.compile(r"^[a-z0-9_]+$")
_CRM_VALUE = re.compile(r"^[a-z0-9_.-]+( [a-z0-9_.-]+)*$")  # as segment_of cleans crm_stage


def _dimension_value(segment: Segment, dimension: str) -> object:
    if dimension == "lifecycle":
        return segment.lifecycle
    if dimension == "tier":
        return segment.engagement_tier
    if dimension == "crm":
        return segment.crm_stage
    if dimension == "cluster":
        return segment.cluster
    return getattr(segment, dimension)  # r, f, m


class SegmentLimits:
    """`core.trigger_segments`: per trigger type, the segments it may go to.

    A trigger type with conditions goes on only when every condition holds (conditions are
    ANDed, the values of one condition ORed); one without any is not limited. A customer with
    no segment (erased) is not limited here (the policy suppresses them anyway)."""

    def __init__(self, text: str, known_types: Sequence[str] | None = None) -> None:
        self.by_type: dict[str, list[tuple[str, frozenset[object]]]] = {}
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            trigger, eq, conditions = part.partition("=")
            trigger = trigger.strip()
            if not eq or not _NAME.match(trigger):
                _fail(f"{part!r} does not start with a trigger type and '='")
            if known_types is not None and trigger not in known_types:
                _fail(f"unknown trigger type {trigger!r} (known: {', '.join(known_types)})")
            if trigger in self.by_type:
                _fail(f"trigger type {trigger!r} given twice")
            rules: list[tuple[str, frozenset[object]]] = []
            for cond in (c.strip() for c in conditions.split(",")):
                dimension, colon, values = cond.partition(":")
                dimension = dimension.strip()
                if not colon or not values.strip():
                    _fail(f"condition {cond!r} of {trigger!r} is not dimension:value|value")
                rules.append((_dimension(dimension), frozenset(
                    _value(dimension, v.strip()) for v in values.split("|")
                )))
            self.by_type[trigger] = rules

    def __bool__(self) -> bool:
        return bool(self.by_type)

    def check_clusters(self, k: int) -> None:
        """SettingsError when a limit names a cluster the model does not have (k of them)."""
        for trigger, rules in self.by_type.items():
            for dim, values in rules:
                wrong = sorted(v for v in values if isinstance(v, int) and v >= k)
                if dim == "cluster" and wrong:
                    have = f"clusters 0-{k - 1}" if k else "no clusters (no trained model)"
                    _fail(f"{trigger!r} names cluster {wrong[0]}, the model has {have}")

    def allows(self, trigger_type: str, segment: Segment | None) -> bool:
        """True when a trigger of this type may go to a customer in `segment`."""
        rules = self.by_type.get(trigger_type)
        if not rules or segment is None:
            return True
        return all(_dimension_value(segment, dim) in values for dim, values in rules)


def _fail(problem: str) -> None:
    raise SettingsError(f"core.trigger_segments: {problem}; format: {_LIMITS_FORMAT}")


def _dimension(name: str) -> str:
    if name not in ("lifecycle", "tier", "r", "f", "m", "cluster", "crm"):
        _fail(f"unknown dimension {name!r}")
    return name


def _value(dimension: str, text: str) -> object:
    if dimension == "lifecycle" and text in LIFECYCLES:
        return text
    if dimension == "tier" and text in TIERS:
        return text
    if dimension in ("r", "f", "m") and text in ("1", "2", "3", "4", "5"):
        return int(text)
    if dimension == "cluster" and text.isdigit() and text.isascii():
        return int(text)
    if dimension == "crm" and _CRM_VALUE.match(text):
        return text
    _fail(f"{text!r} is not a value of {dimension}")
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ training


@dataclass(frozen=True, slots=True)
class Fit:
    """A trained segment model and how well its clustering separates the customers."""

    model: SegmentModel
    customers: int
    labels: np.ndarray           # cluster of each customer (input order)
    inertia: float
    silhouette: float | None     # on a sample; None when it cannot be computed (k < 2 ...)
    random_silhouette: float | None  # the same sample, labels drawn at random, same k
    sample: int                  # customers in the silhouette sample


def rfm_values(f: Features, as_of: int) -> tuple[float, float, float]:
    """(days since last activity, sessions in 7 d, revenue in 30 d): what RFM ranks."""
    last = f.last_activity_at
    days = _NEVER_DAYS if last is None else max(0, as_of - last) / DAY
    return days, float(f.sessions_7d), float(f.revenue_30d)


def fit_segments(
    rfm: np.ndarray,
    vectors: np.ndarray,
    k: int,
    seed: int = 0,
    n_init: int = 4,
    max_iter: int = 100,
    silhouette_sample: int = 2000,
) -> Fit:
    """RFM quintile edges and k-means on standardized component vectors, one row a customer.

    `rfm`: [n, 3] from rfm_values; `vectors`: [n, 8] scoring components. Edges: the 20/40/60/
    80 % quantiles of each column (R over the finite values). k-means: k-means++ seeding, Lloyd
    iterations, the best of `n_init` runs by inertia, all from numpy's seeded generator, so one
    seed gives one model. k is cut to the number of distinct vectors.
    """
    n = len(vectors)
    edges = np.zeros((3, EDGES))
    qs = [0.2, 0.4, 0.6, 0.8]
    for j in range(3):
        col = rfm[:, j][np.isfinite(rfm[:, j])] if n else np.empty(0)
        edges[j] = np.quantile(col, qs) if len(col) else 0.0
    x = np.asarray(vectors, np.float64).reshape(n, 8)
    mean = x.mean(axis=0) if n else np.zeros(8)
    scale = x.std(axis=0) if n else np.ones(8)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    rng = np.random.default_rng(seed)
    distinct = len(np.unique(z, axis=0)) if n else 0
    k = max(0, min(k, distinct))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(max(1, n_init) if k else 0):
        centroids, labels, inertia = _kmeans(z, k, rng, max_iter)
        if best is None or inertia < best[0]:
            best = (inertia, centroids, labels)
    if best is None:
        inertia, centroids, labels = 0.0, np.zeros((0, 8)), np.zeros(n, np.int64)
    else:
        inertia, centroids, labels = best
    model = SegmentModel(edges, mean, scale, centroids)
    model.validate()
    sil = rand = None
    size = 0
    if k >= 2 and n > k:
        pick = rng.choice(n, size=min(n, silhouette_sample), replace=False)
        size = len(pick)
        sil = silhouette(z[pick], labels[pick])
        rand = silhouette(z[pick], rng.integers(0, k, size=size))
    return Fit(model, n, labels, float(inertia), sil, rand, size)


def _kmeans(
    z: np.ndarray, k: int, rng: np.random.Generator, max_iter: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """One k-means run: k-means++ seeding, then Lloyd until the labels stop changing."""
    n = len(z)
    centroids = np.empty((k, z.shape[1]))
    centroids[0] = z[rng.integers(n)]
    d2 = ((z - centroids[0]) ** 2).sum(axis=1)
    for j in range(1, k):
        total = d2.sum()
        i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centroids[j] = z[i]
        d2 = np.minimum(d2, ((z - centroids[j]) ** 2).sum(axis=1))
    labels = np.full(n, -1, np.int64)
    for _ in range(max_iter):
        dist = ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        new = dist.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = z[labels == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
            else:  # an empty cluster takes the point farthest from its centroid
                far = int(dist[np.arange(n), labels].argmax())
                centroids[j] = z[far]
    inertia = float(((z - centroids[labels]) ** 2).sum())
    return centroids, labels, inertia


def silhouette(z: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette of the points (Euclidean); None with fewer than two clusters present.

    s(i) = (b - a) / max(a, b), a the mean distance to the other members of its cluster, b the
    least mean distance to another cluster's members; 0 for a point alone in its cluster."""
    present = np.unique(labels)
    if len(present) < 2:
        return None
    d = np.sqrt(np.maximum(((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=2), 0.0))
    n = len(z)
    sums = np.stack([d[:, labels == c].sum(axis=1) for c in present], axis=1)
    counts = np.array([(labels == c).sum() for c in present], np.float64)
    own = np.searchsorted(present, labels)
    own_count = counts[own]
    a = np.where(own_count > 1, sums[np.arange(n), own] / np.maximum(own_count - 1, 1), 0.0)
    other = sums / counts
    other[np.arange(n), own] = np.inf
    b = other.min(axis=1)
    denom = np.maximum(a, b)
    s = np.where((own_count > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1), 0.0)
    return float(s.mean())
