"""`personalize train`: fit the item-to-item recommendation model offline and measure it.

    personalize train --input data.csv --format rees46 --out model.npz [--holdout-fraction 0.2]

1. Splits the behaviour events by time: the last `--holdout-fraction` of them (by event time)
   is the holdout, the rest the training part.
2. Trains on the training part and measures recall@k on the holdout: for every holdout customer
   with earlier history, do the items they touch next (and had not touched before) appear in
   the top-k recommended from their earlier items? Next to it, in the same run and on the same
   customers, two baselines without neighbours: category + global popularity, and global
   popularity alone.
3. Refits on all the events (the holdout is the newest data: the model to serve must know it)
   and writes that model to `--out` (default: settings paths.model), with the co-purchase pairs
   (products bought in one order by one customer) that post-purchase cross-sell recommends.

`--holdout-fraction 0` skips the evaluation. The model file is read by the job through
transforms.recommend.Model.load (settings paths.model).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transforms.settings import Settings

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
    p.set_defaults(func=run)


def read_items(path: Path, fmt: str) -> Iterator[Any]:
    """Events (and profiles, dead letters) of an input file in one of FORMATS."""
    from transforms import readers

    if fmt == "rees46":
        return readers.read_rees46(path, synthesize_profiles=False)
    return readers.read_events_jsonl(path)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Split, train, evaluate against the baselines, refit on everything, write the model."""
    from transforms.model import BehaviourEvent
    from transforms.recommend import Recommender, evaluate, split_by_time, train

    out = args.out or (Path(settings.paths.model) if settings.paths.model else None)
    if out is None:
        print("train: give --out MODEL.npz (or set paths.model)")
        return 2
    if not 0.0 <= args.holdout_fraction < 1.0:
        print("train: --holdout-fraction must be in [0, 1)")
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
    model.save(out)
    linked = int((model.nbr_idx >= 0).any(axis=1).sum())
    paired = 0 if model.cop_idx is None else int((model.cop_idx >= 0).any(axis=1).sum())
    print(f"model: {len(model.item_ids)} items ({linked} with neighbours, {paired} with "
          f"co-purchases), "
          f"{len(model.categories)} categories, trained on all {model.events} events "
          f"in {time.perf_counter() - started:.2f} s -> {out}")
    return 0
