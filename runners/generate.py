"""`personalize generate`: synthetic traffic (runners/traffic.py) to Kafka or to a file.

    personalize generate --events 100000 --customers 5000 --to kafka [--realtime] [--confluent]
    personalize generate --events 1000000 --to file --format rees46 --out big.csv
    personalize generate --to file --out gt.jsonl --responses    (docs/learning-loop-scoring.md)
    personalize generate --to file --format jsonl --out events.jsonl --malformed-ratio 0.01

Kafka: events (and malformed records) to kafka.events_topic, profiles to kafka.profiles_topic,
keyed by customer_id, schemaless Avro (--confluent: Confluent wire format). With
--catalog-changes N, a catalog change (price drop or rise, stock out, restock: runners/
catalog_traffic.py) follows every N-th product view or cart add, to kafka.catalog_changes_topic
keyed by product_id, or into the file (jsonl and avro; rees46 cannot hold them: skipped).
Files: `jsonl` is the events JSONL of transforms/jsonl.py; `rees46` the CSV replayed by
`personalize replay` (only views, carts, removals and purchases: the rest is counted as
skipped); `avro` a record log of Confluent-framed values (runners/kafka_io.py). Prints the
counts as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.connections import open_producer
from runners.catalog_traffic import (
    CHANGES,
    CatalogTrafficConfig,
    change_record,
    with_catalog_changes,
)
from runners.kafka_io import quiet_client_logs, write_record
from runners.progress import Pacer, Progress
from runners.traffic import (
    DEFAULT_START,
    EVENTS,
    PROFILES,
    Generated,
    Malformed,
    Traffic,
    TrafficConfig,
    avro_record,
    jsonl_line,
    rees46_line,
)
from transforms.catalog_changes import CatalogChange
from transforms.model import event_time
from transforms.readers import REES46_COLUMNS
from transforms.settings import Settings


def parse_instant(text: str) -> int:
    """Epoch milliseconds from digits (already ms) or an ISO-8601 instant with an offset or Z."""
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +00:00)")
    return int(dt.timestamp() * 1000)


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a ratio in [0, 1]")
    return value


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `generate` to the CLI."""
    p = sub.add_parser("generate", parents=parents, help="synthetic traffic to Kafka or a file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000, metavar="N",
                   help="behaviour events (default 10000)")
    p.add_argument("--customers", type=int, default=1_000, metavar="N",
                   help="customers (default 1000)")
    p.add_argument("--rate", type=float, default=50.0, metavar="EVENTS_PER_S",
                   help="event-time rate, and wall-clock rate with --realtime (default 50)")
    p.add_argument("--start", type=parse_instant, default=DEFAULT_START, metavar="INSTANT",
                   help="event-time anchor: ISO-8601 with offset, or epoch ms "
                        "(default 2026-01-05T08:00Z)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: same seed, same traffic (default 0)")
    p.add_argument("--duplicate-ratio", type=_ratio, default=0.0, metavar="R",
                   help="share of events sent twice (default 0)")
    p.add_argument("--out-of-order-ms", type=int, default=0, metavar="MS",
                   help="delay items by up to MS of event time (bounded shuffle; default 0)")
    p.add_argument("--malformed-ratio", type=_ratio, default=0.0, metavar="R",
                   help="share of events made malformed: garbage, truncated, negative price "
                        "(default 0)")
    p.add_argument("--catalog-changes", type=int, default=0, metavar="N",
                   help="a catalog change after every N-th product view or cart add "
                        "(default 0: none)")
    p.add_argument("--catalog-hostile-ratio", type=_ratio, default=0.0, metavar="R",
                   help="share of catalog changes made invalid (negative price; default 0)")
    p.add_argument("--to", choices=("kafka", "file"), required=True, help="where to write")
    p.add_argument("--format", choices=("avro", "jsonl", "rees46"), default="jsonl",
                   help="file format (default jsonl)")
    p.add_argument("--out", type=Path, metavar="PATH", help="output file (with --to file)")
    p.add_argument("--realtime", action="store_true",
                   help="with --to kafka: send at the pace of event time (i.e. at --rate)")
    p.add_argument("--confluent", action="store_true",
                   help="with --to kafka: values in the Confluent wire format")
    p.add_argument("--responses", action="store_true",
                   help="with --to file (jsonl, avro): add the customers' answers to the job's "
                        "emails from a ground truth, the loop closed over the reference runner, "
                        "and write OUT.truth.json (runners/ground_truth.py)")
    p.add_argument("--truth", type=Path, metavar="FILE",
                   help="with --responses: ground truth .json or .toml (default: built-in)")
    p.add_argument("--loop-rounds", type=int, default=60, metavar="N",
                   help="with --responses: most replays to close the loop (default 60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Generate, write, print the counts."""
    if args.to == "file" and args.out is None:
        print("generate: --to file needs --out PATH", file=sys.stderr)
        return 2
    if args.truth is not None and not args.responses:
        print("generate: --truth needs --responses", file=sys.stderr)
        return 2
    if args.responses:
        from runners.ground_truth import generate_with_responses

        return generate_with_responses(args, settings)
    cfg = traffic_config(args)
    try:
        traffic = Traffic(cfg)
    except ValueError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    progress = Progress("generate")
    items: Iterable[Any] = traffic
    changes = CatalogTrafficConfig(every=max(0, args.catalog_changes), seed=args.seed,
                                   hostile_ratio=args.catalog_hostile_ratio)
    changed: dict[str, int] = {}
    if changes.every:
        items = with_catalog_changes(traffic, changes, changed)
    if args.to == "kafka":
        if not args.verbose:
            quiet_client_logs()
        pacer = Pacer(1.0) if args.realtime else None
        written = send_to_kafka(items, settings, progress, pacer, args.confluent)
    else:
        written = write_file(items, args.format, args.out, progress)
    counts = {**traffic.counts, **changed, **written, "seconds": round(progress.done(), 3)}
    print(json.dumps(counts))
    return 0 if not counts.get("failed") else 1


def item_time(item: Generated) -> int:
    """The event time of a generated item (a malformed one: its source event's)."""
    if isinstance(item, CatalogChange):
        return item.occurred_at
    return item.event.occurred_at if isinstance(item, Malformed) else event_time(item)


def write_file(
    items: Iterable[Generated], fmt: str, path: Path, progress: Progress
) -> dict[str, int]:
    """Write `items` to `path` in `fmt` (avro | jsonl | rees46); returns written / skipped."""
    written = skipped = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "avro":
        with path.open("wb") as bin_fh:
            for item in items:
                _, key, value = (change_record(item, confluent=True)
                                 if isinstance(item, CatalogChange)
                                 else avro_record(item, confluent=True))
                write_record(bin_fh, key.encode(), value)
                written += 1
                progress.tick()
        return {"written": written, "skipped": 0}
    with path.open("w", encoding="utf-8", newline="") as fh:
        if fmt == "rees46":
            fh.write(",".join(REES46_COLUMNS) + "\n")
        render = rees46_line if fmt == "rees46" else jsonl_line
        for item in items:
            line = (None if fmt == "rees46" else jsonl_line(item)) \
                if isinstance(item, CatalogChange) else render(item)
            progress.tick()
            if line is None:
                skipped += 1
                continue
            fh.write(line)
            fh.write("\n")
            written += 1
    return {"written": written, "skipped": skipped}


def send_to_kafka(
    items: Iterable[Generated], settings: Settings, progress: Progress, pacer: Pacer | None,
    confluent: bool,
) -> dict[str, int]:
    """Produce `items` to the events and profiles topics, keyed by customer_id."""
    from runners.services._kafka import ensure_topics

    k = settings.kafka
    topics = {EVENTS: k.events_topic, PROFILES: k.profiles_topic,
              CHANGES: k.catalog_changes_topic}
    ensure_topics(k, topics.values(), k.partitions)
    producer = open_producer(k)
    failures: list[BaseException] = []
    written = 0
    try:
        for item in items:
            if pacer is not None:
                pacer.wait(item_time(item))
            kind, key, value = (change_record(item, confluent) if isinstance(item, CatalogChange)
                                else avro_record(item, confluent))
            producer.send(topics[kind], key=key.encode(), value=value).add_errback(failures.append)
            written += 1
            progress.tick()
        producer.flush()
    finally:
        producer.close()
    if failures:
        print(f"generate: {len(failures)} sends failed, first: {failures[0]!r}", file=sys.stderr)
    return {"written": written - len(failures), "failed": len(failures)}


def traffic_config(args: argparse.Namespace) -> TrafficConfig:
    """The traffic knobs of the command line."""
    return TrafficConfig(
        events=args.events, customers=args.customers, rate=args.rate, start=args.start,
        seed=args.seed, duplicate_ratio=args.duplicate_ratio, out_of_order_ms=args.out_of_order_ms,
        malformed_ratio=args.malformed_ratio,
    )
