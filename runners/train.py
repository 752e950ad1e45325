"""`personalize train`: fit the item-to-item recommendation model offline and measure it.

    personalize train --input data.csv --format rees46 --out model.npz [--holdout-fraction 0.2]

1. Splits the behaviour events by time: the last `--holdout-fraction` of them (by event time)
   is the holdout, the rest the training part.
2. Trains on the training part and measures recall@k on the holdout: for every holdout customer
   with earlier history, do the items they touch next (and had not touched before) appear in
   the top-k recommended from their earlier items? Next to it, in the same run and on the same
   customers, two baselines without neighbours: category + global popularity, and global
   popularity alone.
3. Refits on all the events (the holdout is the newest data: the model to serve must know it),
   with the co-purchase pairs (products bought in one order by one customer) that post-purchase
   cross-sell recommends.
4. Segments (transforms/segments.py): every customer's windowed features as the job would hold
   them at the end of the history (the core replays each customer's events), RFM quintile
   edges of them, and k-means (`--clusters`, k-means++ seeded by `--seed`) on their
   standardized engagement components; prints the silhouette of the clustering next to that
   of a random assignment with the same k, on a sample of `--silhouette-sample` customers.
5. Writes the model, with the segment model in it, to `--out` (default: settings paths.model).

`--holdout-fraction 0` skips the evaluation. The model file is read by the job through
transforms.recommend.Model.load (settings paths.model).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from transforms.model import BehaviourEvent
from transforms.scoring import component_vector
from transforms.segments import Fit, fit_segments, rfm_values
from transforms.settings import CoreSettings, Settings
from transforms.windows import Features

FORMATS = ("rees46", "jsonl")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `train` to the CLI."""
    p = sub.add_parser(
        "train", parents=parents, help="train and evaluate the recommendation model (.npz)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, type=Path, metavar="PATH",
                   help="behaviour events file")
    p.add_argument("--format", choices=FORMATS, default="rees46",
                   help="input format (default: rees46)")
    p.add_argument("--out", type=Path, metavar="MODEL.npz",
                   help="where to write the model (default: settings paths.model)")
    p.add_argument("--holdout-fraction", type=float, default=0.2, metavar="F",
                   help="newest share of events held out for evaluation, 0 to skip (default: 0.2)")
    p.add_argument("--neighbours", type=int, default=20, metavar="N",
                   help="neighbours kept per item (default: 20)")
    p.add_argument("--k", type=int, default=10, help="evaluate recall@k (default: 10)")
    p.add_argument("--clusters", type=int, default=4, metavar="K",
                   help="k-means clusters of the customer segments, 0 for none (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (default: 0)")
    p.add_argument("--silhouette-sample", type=int, default=2000, metavar="N",
                   help="customers the silhouette is measured on (default: 2000)")
    p.set_defaults(func=run)


def read_items(path: Path, fmt: str) -> Iterator[Any]:
    """Events (and profiles, dead letters) of an input file in one of FORMATS."""
    from transforms import readers

    if fmt == "rees46":
        return readers.read_rees46(path, synthesize_profiles=False)
    return readers.read_events_jsonl(path)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Split, train, evaluate against the baselines, refit on everything, write the model."""
    from transforms.recommend import Recommender, evaluate, split_by_time, train

    out = args.out or (Path(settings.paths.model) if settings.paths.model else None)
    if out is None:
        print("train: give --out MODEL.npz (or set paths.model)")
        return 2
    if not 0.0 <= args.holdout_fraction < 1.0:
        print("train: --holdout-fraction must be in [0, 1)")
        return 2
    if args.clusters < 0 or args.silhouette_sample < 2:
        print("train: --clusters must be >= 0 and --silhouette-sample >= 2")
        return 2
    items = list(read_items(args.input, args.format))
    events = [e for e in items if isinstance(e, BehaviourEvent)]
    print(f"read {len(items)} records from {args.input}: {len(events)} behaviour events, "
          f"{len(items) - len(events)} other (profiles, dead letters) skipped")

    if args.holdout_fraction > 0:
        earlier, later = split_by_time(events, args.holdout_fraction)
        if not earlier or not later:
            print("train: too few events to split; use --holdout-fraction 0")
            return 2
        started = time.perf_counter()
        model = train(earlier, args.neighbours)
        fit_s = time.perf_counter() - started
        cut = datetime.fromtimestamp(later[0].occurred_at / 1000, UTC).isoformat()
        print(f"split at {cut}: {len(earlier)} earlier events (trained in {fit_s:.2f} s), "
              f"{len(later)} holdout events")
        k, seeds = args.k, settings.core.recent_items
        popularity = Recommender(model.popularity_only())
        rows = [
            ("item-to-item CF, popularity top-up", Recommender(model), True),
            ("baseline: category + global popularity", popularity, True),
            ("baseline: global popularity", popularity, False),
        ]
        for label, recommender, use_categories in rows:
            result = evaluate(recommender, earlier, later, k, seeds, use_categories=use_categories)
            print(f"  recall@{k} {result.recall:.4f}  hit-rate@{k} {result.hit_rate:.4f}  "
                  f"customers {result.customers}  {label}")
    started = time.perf_counter()
    model = train(events, args.neighbours)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    fit = fit_customer_segments(
        events, settings, model.trained_until, args.clusters, args.seed, args.silhouette_sample
    )
    model = replace(model, segments=fit.model)
    model.save(out)
    print(report_segments(fit, time.perf_counter() - started))
    linked = int((model.nbr_idx >= 0).any(axis=1).sum())
    paired = 0 if model.cop_idx is None else int((model.cop_idx >= 0).any(axis=1).sum())
    print(f"model: {len(model.item_ids)} items ({linked} with neighbours, {paired} with "
          f"co-purchases), "
          f"{len(model.categories)} categories, trained on all {model.events} events "
          f"in {fit_s:.2f} s -> {out}")
    return 0


def customer_features(
    events: Sequence[BehaviourEvent], core: CoreSettings, as_of: int
) -> list[Features]:
    """Each customer's windowed features at `as_of` as the job would hold them: the core
    replays the customer's events (dedup, windows, purges) and is woken at `as_of`."""
    from transforms.core import Core

    rules = Core(core)
    by_customer: dict[str, list[BehaviourEvent]] = {}
    for e in events:
        by_customer.setdefault(e.customer_id, []).append(e)
    found = []
    for cid in sorted(by_customer):
        state = None
        for e in by_customer[cid]:
            state, _, _ = rules.step(state, e)
        state, _, _ = rules.wake(state, as_of)
        found.append(state.windows.features(as_of) if state is not None else Features(as_of))
    return found


def fit_customer_segments(
    events: Sequence[BehaviourEvent],
    settings: Settings,
    as_of: int,
    clusters: int = 4,
    seed: int = 0,
    silhouette_sample: int = 2000,
) -> Fit:
    """RFM edges and k-means of the customers of `events` as of `as_of` (segments.fit_segments)."""
    features = customer_features(events, settings.core, as_of)
    rfm = np.array([rfm_values(f, as_of) for f in features], np.float64).reshape(-1, 3)
    vectors = np.array([component_vector(f, as_of) for f in features], np.float64)
    return fit_segments(
        rfm, vectors.reshape(-1, 8), clusters, seed=seed, silhouette_sample=silhouette_sample
    )


def report_segments(fit: Fit, seconds: float) -> str:
    """What the segment fit found, in a few lines."""
    m = fit.model
    names = ("R (days since last activity)", "F (sessions in 7 d)", "M (revenue in 30 d)")
    lines = [f"segments: {fit.customers} customers, k-means k={len(m.centroids)} in {seconds:.2f} s"
             f" (inertia {fit.inertia:.1f})"]
    for name, row in zip(names, m.rfm_edges.tolist(), strict=True):
        lines.append(f"  RFM quintile edges {name}: " + ", ".join(f"{v:.4g}" for v in row))
    if fit.silhouette is None or fit.random_silhouette is None:
        lines.append("  silhouette: not measurable (fewer than 2 clusters or too few customers)")
    else:
        lines.append(f"  silhouette {fit.silhouette:.4f} on {fit.sample} customers; random "
                     f"assignment, same k: {fit.random_silhouette:.4f}")
    sizes = np.bincount(fit.labels, minlength=len(m.centroids)).tolist() if len(m.centroids) else []
    lines.append(f"  cluster sizes: {sizes}")
    return "\n".join(lines)
