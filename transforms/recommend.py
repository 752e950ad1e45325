"""Top-k product recommendations: item-to-item collaborative filtering plus popularity.

Offline, `train(events) -> Model` (numpy only):

    baskets      one per (customer, session): item -> weight, the strongest event on it
                 (view 1 < add_to_cart 3 < purchase 5)
    co-occurrence C[i, j] = sum over baskets of w_i * w_j  (i != j)
    similarity   cos(i, j) = C[i, j] / sqrt(C[i, i] * C[j, j]),  C[i, i] = sum of w_i ** 2
    neighbours   per item the top-N (similarity desc, product_id asc) among the items sharing
                 at least `min_support` (2) baskets with it: dense int32 / float32 arrays
    co-purchases per item the top-N items bought with it in the same order (customer and
                 order_id; the session without one), by the number of such orders desc, then
                 product_id: cop_idx / cop_score, the complements of post-purchase cross-sell.
                 Optional in the file: a model saved before them loads without (no tier 0)
    popularity   per category and global: sum of event weights, each halved every
                 `popularity_half_life` before the newest event (recent-weighted counts)

The model is a handful of dense arrays saved as one .npz (no pickle), with the segment model
of `personalize train` (transforms/segments.py, seg_* arrays) when it has one: files written
before it load with `segments` None. Items are indexed in
ascending product_id order, so "ties by product_id" is "ties by index" everywhere.

Online, `Recommender(model).recommend(seeds, categories, exclude, k, complements_of)` ranks
in tiers:
  0. co-purchases: the `complements_of` products' co-purchase counts summed (post-purchase);
  1. neighbours: the seeds' neighbour scores summed (numpy gather + accumulate, O(seeds * N));
  2. popularity of `categories`, in the order given (cold start, or too few neighbours);
  3. global popularity;
never returning a seed or an `exclude` id (cart, just bought), each id at most once, ties by
product_id, scores rounded to 6 decimals. Scores never increase down the list: a popularity
tier is scaled to start at the last score above it. With no model (None or empty) only the
customer's own seeds remain: those not excluded, in the order given (most relevant first is the
caller's job), scored 1 / (rank + 1), so a payload still shows products.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from transforms.model import ADD_TO_CART, PRODUCT_VIEW, PURCHASE, BehaviourEvent
from transforms.segments import SegmentModel
from transforms.settings import DAY

FORMAT_VERSION = 1
OPTIONAL = ("cop_idx", "cop_score")  # arrays a model file may lack (saved before them)
NOT_REQUIRED = ("trained_until", "events", "segments", *OPTIONAL)
PAIR_CHUNK = 4_000_000  # basket pairs expanded at once while training
EVENT_WEIGHTS: Mapping[str, float] = {PRODUCT_VIEW: 1.0, ADD_TO_CART: 3.0, PURCHASE: 5.0}


@dataclass(frozen=True, slots=True)
class Model:
    """A trained item-to-item model: dense numpy arrays, items in ascending product_id order."""

    item_ids: np.ndarray        # str  [n_items], sorted ascending
    item_category: np.ndarray   # int32 [n_items], index into `categories`, -1 = unknown
    nbr_idx: np.ndarray         # int32 [n_items, N], neighbour item indices, -1 = none
    nbr_score: np.ndarray       # float32 [n_items, N], cosine similarity, descending per row
    categories: np.ndarray      # str  [n_cat], sorted ascending
    cat_ptr: np.ndarray         # int64 [n_cat + 1], CSR offsets into cat_items / cat_scores
    cat_items: np.ndarray       # int32, per category: most popular first (ties by product_id)
    cat_scores: np.ndarray      # float32, recent-weighted popularity
    pop_items: np.ndarray       # int32, global: most popular first (ties by product_id)
    pop_scores: np.ndarray      # float32
    trained_until: int = 0      # newest event time in the training data (epoch ms)
    events: int = 0             # events the model was trained on
    segments: SegmentModel | None = None  # RFM edges and k-means centroids (seg_* arrays)
    cop_idx: np.ndarray | None = None    # int32 [n_items, N], co-purchased items, -1 = none
    cop_score: np.ndarray | None = None  # float32 [n_items, N], orders holding both, desc

    @staticmethod
    def empty() -> Model:
        """A model that knows nothing: the recommender falls back to the customer's seeds."""
        return Model(
            item_ids=np.empty(0, dtype="<U1"),
            item_category=np.empty(0, dtype=np.int32),
            nbr_idx=np.empty((0, 0), dtype=np.int32),
            nbr_score=np.empty((0, 0), dtype=np.float32),
            categories=np.empty(0, dtype="<U1"),
            cat_ptr=np.zeros(1, dtype=np.int64),
            cat_items=np.empty(0, dtype=np.int32),
            cat_scores=np.empty(0, dtype=np.float32),
            pop_items=np.empty(0, dtype=np.int32),
            pop_scores=np.empty(0, dtype=np.float32),
        )

    @property
    def is_empty(self) -> bool:
        """True when the model has no items at all."""
        return len(self.item_ids) == 0

    @property
    def neighbours(self) -> int:
        """N, the number of neighbour slots per item."""
        return int(self.nbr_idx.shape[1])

    def popularity_only(self) -> Model:
        """The same model without neighbours: the popularity baseline of the evaluation."""
        n = len(self.item_ids)
        return replace(
            self,
            nbr_idx=np.empty((n, 0), dtype=np.int32),
            nbr_score=np.empty((n, 0), dtype=np.float32),
        )

    def save(self, path: str | Path) -> None:
        """Write the model as one .npz at `path` (atomically: a temp file, then rename)."""
        path = Path(path)
        arrays: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        arrays["meta"] = np.array([FORMAT_VERSION, self.trained_until, self.events], np.int64)
        if self.segments is not None:
            arrays.update(self.segments.arrays())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @staticmethod
    def load(path: str | Path) -> Model:
        """Read a model written by `save`; raises ValueError if it is not one."""
        with np.load(Path(path), allow_pickle=False) as z:
            names = [f.name for f in fields(Model) if f.name not in NOT_REQUIRED]
            missing = [n for n in ["meta", *names] if n not in z.files]
            if missing:
                raise ValueError(f"{path}: not a recommendation model (missing {missing})")
            version, trained_until, events = (int(v) for v in z["meta"])
            if version != FORMAT_VERSION:
                raise ValueError(f"{path}: model format {version}, expected {FORMAT_VERSION}")
            segments = SegmentModel.from_arrays({n: z[n] for n in z.files if n.startswith("seg_")})
            optional = {n: z[n] for n in OPTIONAL if n in z.files}
            model = Model(
                **{n: z[n] for n in names}, trained_until=trained_until, events=events,
                segments=segments, **optional,
            )
        model.validate()
        return model

    def validate(self) -> None:
        """Raise ValueError unless the arrays are consistent (shapes, dtypes, index ranges)."""
        n, n_cat = len(self.item_ids), len(self.categories)
        checks = [
            (self.item_ids.dtype.kind == "U" and self.categories.dtype.kind == "U", "id dtype"),
            (self.item_category.shape == (n,), "item_category shape"),
            (self.nbr_idx.ndim == 2 and self.nbr_idx.shape[0] == n, "nbr_idx shape"),
            (self.nbr_score.shape == self.nbr_idx.shape, "nbr_score shape"),
            (self.cat_ptr.shape == (n_cat + 1,), "cat_ptr shape"),
            (len(self.cat_items) == len(self.cat_scores) == int(self.cat_ptr[-1]), "cat sizes"),
            (len(self.pop_items) == len(self.pop_scores), "pop sizes"),
        ]
        cop, cop_score = self.cop_idx, self.cop_score
        if cop is not None or cop_score is not None:
            checks.append((
                cop is not None and cop_score is not None and cop.ndim == 2
                and cop.shape[0] == n and cop_score.shape == cop.shape
                and cop.dtype.kind == "i" and cop_score.dtype.kind == "f", "cop shape",
            ))
        for ok, what in checks:
            if not ok:
                raise ValueError(f"inconsistent model: {what}")
        bounds = [(self.nbr_idx, n), (self.cat_items, n), (self.pop_items, n),
                  (self.item_category, n_cat)]
        if cop is not None:
            bounds.append((cop, n))
        for arr, size in bounds:
            if arr.size and (arr.min() < -1 or arr.max() >= size):
                raise ValueError("inconsistent model: index out of range")


def train(
    events: Iterable[Any],
    neighbours: int = 20,
    *,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
    max_basket_items: int = 50,
    min_support: int = 2,
    popular_per_category: int = 50,
    popular_global: int = 200,
    popularity_half_life: int = 7 * DAY,
) -> Model:
    """Train the model from behaviour events (anything else in `events` is skipped).

    Events repeated by event_id count once. A basket (customer, session; the customer alone
    when there is no session) keeps its `max_basket_items` strongest items (then most recent),
    which bounds the pair count of bot-like sessions at max_basket_items ** 2. Two items
    become neighbours only when they share at least `min_support` baskets: one shared session
    is mostly chance, and on the shipped data requiring two lifts recall@10 from below the
    popularity baseline to above it (see runners/train.py).
    """
    seen: set[str] = set()
    rows: list[tuple[str, str, str, float, int, str | None]] = []
    orders: list[tuple[str, str]] = []  # (customer + order, product) of each purchase line
    for e in events:
        if not isinstance(e, BehaviourEvent) or e.product is None or e.event_id in seen:
            continue
        weight = weights.get(e.event_type)
        if not weight:
            continue
        seen.add(e.event_id)
        p = e.product
        basket_name = f"{e.customer_id}\x1f{e.session_id or ''}"
        rows.append((basket_name, p.product_id, e.event_id, weight, e.occurred_at, p.category))
        if e.event_type == PURCHASE:
            orders.append((f"{e.customer_id}\x1f{e.order_id or e.session_id or ''}", p.product_id))
    if not rows:
        return Model.empty()
    rows.sort(key=lambda r: (r[4], r[2]))  # event-time order: "latest category" is well defined

    item_ids = np.array(sorted({r[1] for r in rows}))
    index = {pid: i for i, pid in enumerate(item_ids.tolist())}
    cat_names = sorted({r[5] for r in rows if r[5]})
    categories = np.array(cat_names) if cat_names else np.empty(0, dtype="<U1")
    cat_index = {c: i for i, c in enumerate(categories.tolist())}
    n = len(item_ids)

    item = np.fromiter((index[r[1]] for r in rows), np.int64, len(rows))
    w = np.fromiter((r[3] for r in rows), np.float64, len(rows))
    t = np.fromiter((r[4] for r in rows), np.int64, len(rows))
    basket_names = {b: i for i, b in enumerate(dict.fromkeys(r[0] for r in rows))}
    basket = np.fromiter((basket_names[r[0]] for r in rows), np.int64, len(rows))
    item_category = np.full(n, -1, dtype=np.int32)
    for r in rows:  # later rows win: the latest known category of each item
        if r[5]:
            item_category[index[r[1]]] = cat_index[r[5]]

    nbr_idx, nbr_score = _neighbours(
        basket, item, w, t, n, neighbours, max_basket_items, min_support
    )

    cop_idx, cop_score = _copurchases(orders, index, n, neighbours, max_basket_items)

    decay = np.exp2((t - t.max()) / float(popularity_half_life))
    # Ranked as stored (float32), so equal stored scores are ordered by product_id.
    popularity = np.bincount(item, weights=w * decay, minlength=n).astype(np.float32)
    order = np.lexsort((np.arange(n), -popularity))[:popular_global]
    cat_ptr, cat_items, cat_scores = _category_popularity(
        popularity, item_category, len(categories), popular_per_category
    )
    return Model(
        item_ids=item_ids,
        item_category=item_category,
        nbr_idx=nbr_idx,
        nbr_score=nbr_score,
        categories=categories,
        cat_ptr=cat_ptr,
        cat_items=cat_items,
        cat_scores=cat_scores,
        pop_items=order.astype(np.int32),
        pop_scores=popularity[order],
        trained_until=int(t.max()),
        events=len(rows),
        cop_idx=cop_idx,
        cop_score=cop_score,
    )


def _copurchases(
    orders: list[tuple[str, str]], index: dict[str, int], n: int, top_n: int, max_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N co-purchased items per item: (cop_idx, cop_score), score = orders with both."""
    cop_idx = np.full((n, top_n), -1, dtype=np.int32)
    cop_score = np.zeros((n, top_n), dtype=np.float32)
    per_order: dict[str, dict[int, None]] = {}
    for order, pid in orders:
        items = per_order.setdefault(order, {})
        if len(items) < max_items:  # a hostile order's pairs stay bounded
            items[index[pid]] = None
    baskets = [sorted(items) for items in per_order.values() if len(items) >= 2]
    if not baskets or top_n <= 0:
        return cop_idx, cop_score
    sizes = np.array([len(b) for b in baskets], dtype=np.int64)
    flat = np.fromiter((i for b in baskets for i in b), np.int64, int(sizes.sum()))
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    keys, _, support = _pairs(flat, np.ones(len(flat)), starts, sizes, n)
    a, c = keys // n, keys % n
    _fill_top(a, c, support, top_n, cop_idx, cop_score)  # support desc, product_id asc
    return cop_idx, cop_score


def _neighbours(
    basket: np.ndarray, item: np.ndarray, w: np.ndarray, t: np.ndarray,
    n: int, top_n: int, max_basket_items: int, min_support: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N cosine neighbours per item from (basket, item, weight, time) event rows."""
    # One entry per (basket, item): the strongest weight, then the latest time.
    order = np.lexsort((t, w, item, basket))
    b, i, wt = basket[order], item[order], w[order]
    last = np.ones(len(b), dtype=bool)
    last[:-1] = (b[1:] != b[:-1]) | (i[1:] != i[:-1])
    b, i, wt, tt = b[last], i[last], wt[last], t[order][last]
    # Keep each basket's strongest (then most recent) items, at most max_basket_items.
    order = np.lexsort((-tt, -wt, b))
    b, i, wt = b[order], i[order], wt[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    sizes = np.diff(np.r_[starts, len(b)])
    rank = np.arange(len(b)) - np.repeat(starts, sizes)
    keep = rank < max_basket_items
    b, i, wt = b[keep], i[keep], wt[keep]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    sizes = np.diff(np.r_[starts, len(b)])

    norm2 = np.bincount(i, weights=wt * wt, minlength=n)
    multi = sizes >= 2
    s, m = starts[multi], sizes[multi]
    nbr_idx = np.full((n, top_n), -1, dtype=np.int32)
    nbr_score = np.zeros((n, top_n), dtype=np.float32)
    if not len(m) or top_n <= 0:
        return nbr_idx, nbr_score
    # Baskets in chunks of about PAIR_CHUNK pairs, each reduced to distinct (i, j) at once:
    # memory follows the number of distinct pairs, not the sum of squared basket sizes.
    per = m * m
    chunk_of = np.cumsum(per) // PAIR_CHUNK
    parts = []
    for lo, hi in zip(*_runs(chunk_of), strict=True):
        parts.append(_pairs(i, wt, s[lo:hi], m[lo:hi], n))
    pairs, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    co = np.bincount(inverse, weights=np.concatenate([p[1] for p in parts]))
    support = np.bincount(inverse, weights=np.concatenate([p[2] for p in parts]))
    supported = support >= min_support
    pairs, co = pairs[supported], co[supported]
    a, c = pairs // n, pairs % n
    sim = (co / np.sqrt(norm2[a] * norm2[c])).astype(np.float32)  # ranked as stored
    _fill_top(a, c, sim, top_n, nbr_idx, nbr_score)  # similarity desc, product_id asc
    return nbr_idx, nbr_score


def _fill_top(a: np.ndarray, c: np.ndarray, score: np.ndarray, top_n: int,
              idx_out: np.ndarray, score_out: np.ndarray) -> None:
    """Per item a, its top_n partners c by score desc, then product_id (= index) asc, into
    row a of idx_out / score_out."""
    order = np.lexsort((c, -score, a))
    a, c, score = a[order], c[order], score[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    rank = np.arange(len(a)) - np.repeat(starts, np.diff(np.r_[starts, len(a)]))
    top = rank < top_n
    idx_out[a[top], rank[top]] = c[top]
    score_out[a[top], rank[top]] = score[top]


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of equal values in a sorted array."""
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    return starts, np.r_[starts[1:], len(labels)]


def _pairs(
    item: np.ndarray, w: np.ndarray, starts: np.ndarray, sizes: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ordered pairs (key = i * n + j, i != j) of the given baskets, with their summed
    w_i * w_j and the number of baskets holding both. Vectorised: a basket of m items
    contributes its m * m cells, the diagonal dropped."""
    per = sizes * sizes
    k = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
    mm = np.repeat(sizes, per)
    left = np.repeat(starts, per) + k // mm
    right = np.repeat(starts, per) + k % mm
    off = left != right
    left, right = left[off], right[off]
    keys, inverse, counts = np.unique(
        item[left] * n + item[right], return_inverse=True, return_counts=True
    )
    return keys, np.bincount(inverse, weights=w[left] * w[right]), counts


def _category_popularity(
    popularity: np.ndarray, item_category: np.ndarray, n_cat: int, top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (ptr, items, scores) of each category's `top` most popular items."""
    known = np.flatnonzero(item_category >= 0)
    cat = item_category[known]
    order = np.lexsort((known, -popularity[known], cat))
    known, cat = known[order], cat[order]
    counts = np.bincount(cat, minlength=n_cat)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(len(cat)) - np.repeat(starts, counts)
    keep = rank < top
    known, cat = known[keep], cat[keep]
    ptr = np.r_[0, np.cumsum(np.bincount(cat, minlength=n_cat))].astype(np.int64)
    return ptr, known.astype(np.int32), popularity[known]


class Recommender:
    """Ranks products for one customer from a model; see the module docstring for the tiers."""

    def __init__(self, model: Model | None) -> None:
        self.model = None if model is None or model.is_empty else model
        if self.model is None:
            return
        self._ids: list[str] = self.model.item_ids.tolist()
        self._index = {pid: i for i, pid in enumerate(self._ids)}
        self._cat_index = {c: i for i, c in enumerate(self.model.categories.tolist())}
        m = self.model
        self._cat_lists = [
            (m.cat_items[m.cat_ptr[c] : m.cat_ptr[c + 1]].tolist(),
             m.cat_scores[m.cat_ptr[c] : m.cat_ptr[c + 1]].tolist())
            for c in range(len(m.categories))
        ]
        self._global = (m.pop_items.tolist(), m.pop_scores.tolist())

    def recommend(
        self,
        seeds: Sequence[str],
        categories: Sequence[str],
        exclude: Collection[str],
        k: int,
        complements_of: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        """Up to k (product_id, score), best first, never a seed nor an excluded id."""
        if k <= 0:
            return []
        if self.model is None:
            return self._own_seeds(seeds, exclude, k)
        banned = set(exclude)
        banned.update(seeds)
        out: list[tuple[str, float]] = []
        chosen: set[str] = set()
        if complements_of:
            self._from_copurchases(complements_of, banned, k, out, chosen)
        if out and len(out) < k:
            more: list[tuple[str, float]] = []
            self._from_neighbours(seeds, banned | chosen, k - len(out), more, chosen)
            if more and more[0][1] > out[-1][1]:  # scores never increase down the list
                scale = out[-1][1] / more[0][1]
                more = [(pid, round(score * scale, 6)) for pid, score in more]
            out += more
        elif not out:
            self._from_neighbours(seeds, banned, k, out, chosen)
        for category in dict.fromkeys(categories):
            c = self._cat_index.get(category)
            if c is not None and len(out) < k:
                self._top_up(*self._cat_lists[c], banned, k, out, chosen)
        if len(out) < k:
            self._top_up(*self._global, banned, k, out, chosen)
        return out

    def _from_neighbours(
        self, seeds: Sequence[str], banned: set[str], k: int,
        out: list[tuple[str, float]], chosen: set[str],
    ) -> None:
        m = self.model
        assert m is not None
        if m.neighbours:
            self._summed(m.nbr_idx, m.nbr_score, seeds, banned, k, out, chosen)

    def _from_copurchases(
        self, products: Sequence[str], banned: set[str], k: int,
        out: list[tuple[str, float]], chosen: set[str],
    ) -> None:
        m = self.model
        assert m is not None
        if m.cop_idx is not None and m.cop_score is not None and m.cop_idx.shape[1]:
            self._summed(m.cop_idx, m.cop_score, products, banned, k, out, chosen)

    def _summed(
        self, rows: np.ndarray, scores: np.ndarray, keys: Sequence[str], banned: set[str],
        k: int, out: list[tuple[str, float]], chosen: set[str],
    ) -> None:
        """Top up `out` to k with the products of `keys`' rows (neighbours or co-purchases),
        their scores summed (numpy gather + accumulate), score desc then product_id asc."""
        known = sorted({i for i in (self._index.get(p) for p in keys) if i is not None})
        if not known:
            return
        idx = rows[known].ravel()
        score = scores[known].ravel().astype(np.float64)
        valid = idx >= 0
        cand, inverse = np.unique(idx[valid], return_inverse=True)
        total = np.round(np.bincount(inverse, weights=score[valid]), 6)
        for j in np.lexsort((cand, -total)).tolist():  # score desc, product_id asc
            pid = self._ids[cand[j]]
            if pid in banned or total[j] <= 0.0:
                continue
            out.append((pid, float(total[j])))
            chosen.add(pid)
            if len(out) == k:
                return

    def _top_up(
        self, items: list[int], scores: list[float], banned: set[str], k: int,
        out: list[tuple[str, float]], chosen: set[str],
    ) -> None:
        if not items or scores[0] <= 0.0:
            return
        scale = (out[-1][1] if out else 1.0) / scores[0]
        for i, s in zip(items, scores, strict=True):
            pid = self._ids[i]
            if pid in banned or pid in chosen:
                continue
            out.append((pid, round(s * scale, 6)))
            chosen.add(pid)
            if len(out) == k:
                return

    @staticmethod
    def _own_seeds(
        seeds: Sequence[str], exclude: Collection[str], k: int
    ) -> list[tuple[str, float]]:
        banned = set(exclude)
        kept = [s for s in dict.fromkeys(seeds) if s not in banned][:k]
        return [(pid, round(1.0 / (rank + 1), 6)) for rank, pid in enumerate(kept)]


# ---- offline evaluation: a later-in-time holdout -------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """recall@k over the customers of a holdout who have earlier history and new items."""

    customers: int      # customers evaluated
    recall: float       # mean over customers of |top-k ∩ new holdout items| / |new holdout items|
    hit_rate: float     # share of customers with at least one hit in their top-k


def split_by_time(
    events: Iterable[Any], holdout_fraction: float
) -> tuple[list[BehaviourEvent], list[BehaviourEvent]]:
    """(earlier, later) behaviour events: the later part is the last `holdout_fraction` of them.

    The cut is an event time: events at the cut instant all go to the holdout, so no second
    is split between the two sides.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in [0, 1)")
    evs = sorted(
        (e for e in events if isinstance(e, BehaviourEvent) and e.product is not None),
        key=lambda e: (e.occurred_at, e.event_id),
    )
    if holdout_fraction == 0.0 or not evs:
        return evs, []
    cut = evs[min(len(evs) - 1, int(len(evs) * (1.0 - holdout_fraction)))].occurred_at
    earlier = [e for e in evs if e.occurred_at < cut]
    return earlier, evs[len(earlier):]


def evaluate(
    recommender: Recommender,
    earlier: Sequence[BehaviourEvent],
    later: Sequence[BehaviourEvent],
    k: int = 10,
    seeds_per_customer: int = 20,
    *,
    use_categories: bool = True,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
) -> Evaluation:
    """recall@k of `recommender` on `later`, seeded by each customer's `earlier` items.

    Seeds: the customer's `seeds_per_customer` most recent earlier items; categories: those of
    their earlier items, most recent first (none with `use_categories=False`). Targets: the
    items they touched in `later` (view, cart or purchase) that are not among their earlier
    items — the recommender never returns a seed, so re-visits would count against every
    method alike and say nothing.
    """
    history: dict[str, dict[str, None]] = {}
    cats: dict[str, dict[str, None]] = {}
    for e in sorted(earlier, key=lambda e: (e.occurred_at, e.event_id), reverse=True):
        if e.product is None or e.event_type not in weights:
            continue
        history.setdefault(e.customer_id, {}).setdefault(e.product.product_id, None)
        if e.product.category:
            cats.setdefault(e.customer_id, {}).setdefault(e.product.category, None)
    targets: dict[str, set[str]] = {}
    for e in later:
        seen = history.get(e.customer_id)
        if seen is not None and e.product is not None and e.event_type in weights:
            if e.product.product_id not in seen:
                targets.setdefault(e.customer_id, set()).add(e.product.product_id)
    recalls: list[float] = []
    for cid in sorted(targets):
        items = list(history[cid])
        categories = list(cats.get(cid, {})) if use_categories else []
        recs = recommender.recommend(items[:seeds_per_customer], categories, items, k)
        hits = len({pid for pid, _ in recs} & targets[cid])
        recalls.append(hits / len(targets[cid]))
    if not recalls:
        return Evaluation(0, 0.0, 0.0)
    r = np.array(recalls)
    return Evaluation(len(r), float(r.mean()), float((r > 0).mean()))
