"""`personalize replay`: a clickstream file into Kafka, or straight through a runner.

    personalize replay --input data.csv --format rees46 --to kafka [--speed 60]
    personalize replay --input data.csv --format rees46 --runner reference --out out/ref
    personalize replay --input events.jsonl --format events-jsonl --runner direct --out out/beam

Formats: `rees46` (the public clickstream CSV; profiles synthesized by default),
`events-jsonl` (transforms/jsonl.py), `avro` (the record log `personalize generate --format avro`
writes). Bad rows become dead letters with the file and line (or record number) as origin.

--to kafka: events to kafka.events_topic and profiles to kafka.profiles_topic, keyed by
customer_id, schemaless Avro; the reader's dead letters to kafka.dead_letters_topic.
--runner: `<module>.run_replay(items, settings, out_dir) -> summary dict` of the runner's
module; flink-cluster replays through Kafka and the standalone cluster (runners/flink_cluster.py,
input topics of kafka.partitions partitions).
--speed N replays at N x real time by event time (default: as fast as possible).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipelines.connections import open_producer
from runners.kafka_io import quiet_client_logs, read_records
from runners.progress import Pacer, Progress
from transforms.catalog_changes import CatalogChange, decode_change, encode_change
from transforms.codec import (
    SCHEMA_ID_OF,
    decode_event,
    decode_profile,
    encode_dead_letter,
    encode_event,
    encode_profile,
)
from transforms.model import BehaviourEvent, CustomerProfile, DeadLetter, Origin, event_time
from transforms.readers import read_events_jsonl, read_rees46, with_synthesized_profiles
from transforms.settings import CoreSettings, Settings

Items = Iterator[BehaviourEvent | CustomerProfile | CatalogChange | DeadLetter]

# --runner -> the module whose run_replay(items, settings, out_dir) runs it
RUNNERS: dict[str, str] = {
    "reference": "pipelines.reference",
    "direct": "pipelines.beam_pipeline",
    "flink": "pipelines.flink_pipeline",
    "flink-cluster": "runners.flink_cluster",
}
_PROFILE_FRAME = b"\x00" + SCHEMA_ID_OF["customer_profile"].to_bytes(4, "big")
_CHANGE_FRAME = b"\x00" + SCHEMA_ID_OF["catalog_change"].to_bytes(4, "big")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `replay` to the CLI."""
    p = sub.add_parser("replay", parents=parents,
                       help="replay a clickstream file into Kafka or a runner",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True, metavar="PATH", help="the file to replay")
    p.add_argument("--format", choices=("rees46", "events-jsonl", "avro"), required=True)
    p.add_argument("--synthesize-profiles", action=argparse.BooleanOptionalAction, default=None,
                   help="a stand-in profile per customer without one (default: on for rees46)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", choices=("kafka",), help="produce to the input topics")
    target.add_argument("--runner", choices=sorted(RUNNERS), help="run the job on the file")
    p.add_argument("--out", type=Path, metavar="DIR", help="with --runner: output directory")
    p.add_argument("--speed", type=float, default=None, metavar="N",
                   help="N x real time by event time (default: as fast as possible)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Read, then produce to Kafka or hand to a runner; print the summary as JSON."""
    if args.runner and args.out is None:
        print("replay: --runner needs --out DIR", file=sys.stderr)
        return 2
    if not args.input.is_file():
        print(f"replay: no such file: {args.input}", file=sys.stderr)
        return 2
    synthesize = args.synthesize_profiles
    if synthesize is None:
        synthesize = args.format == "rees46"
    items = read_items(args.input, args.format, synthesize, settings.core)
    if args.limit is not None:
        items = itertools.islice(items, args.limit)
    if args.speed is not None:
        items = paced(items, Pacer(args.speed))
    progress = Progress("replay")
    if (args.to == "kafka" or args.runner == "flink-cluster") and not args.verbose:
        quiet_client_logs()
    if args.to == "kafka":
        summary = produce(items, settings, progress)
    else:
        module_name = RUNNERS[args.runner]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            print(f"replay: runner {args.runner!r} needs {module_name}, which does not exist yet",
                  file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        summary = module.run_replay(counted(items, progress), settings, args.out)
    summary = {**summary, "seconds": round(progress.done(), 3)}
    print(json.dumps(summary, indent=1, default=str))
    if args.runner:
        from runners.report import write_report

        print(f"replay: report at {write_report(args.out)}", file=sys.stderr)
    return 0 if not summary.get("failed") else 1


def read_items(path: Path, fmt: str, synthesize: bool, core: CoreSettings) -> Items:
    """The items of `path` in `fmt` (rees46 | events-jsonl | avro), in file order."""
    if fmt == "rees46":
        return read_rees46(path, synthesize, core)
    if fmt == "events-jsonl":
        return read_events_jsonl(path, synthesize, core)
    items = read_record_log(path, core)
    return with_synthesized_profiles(items) if synthesize else items


def read_record_log(path: Path, core: CoreSettings) -> Items:
    """Decoded values of a record log (runners/kafka_io.py); origin offset = record number."""
    topic = str(path)
    for n, (_, value) in enumerate(read_records(path), start=1):
        origin = Origin(topic, -1, n)
        if value.startswith(_PROFILE_FRAME):
            yield decode_profile(value, origin, core, 0)
        elif value.startswith(_CHANGE_FRAME):
            yield decode_change(value, origin, core, None)
        else:
            yield decode_event(value, origin, None, core, 0)


def paced(items: Iterable[Any], pacer: Pacer) -> Items:
    """`items`, each released when its event time is due (dead letters pass at once)."""
    for item in items:
        if isinstance(item, CatalogChange):
            pacer.wait(item.occurred_at)
        elif not isinstance(item, DeadLetter):
            pacer.wait(event_time(item))
        yield item


def counted(items: Iterable[Any], progress: Progress) -> Items:
    """`items`, ticking `progress` for each."""
    for item in items:
        progress.tick()
        yield item


def produce(items: Items, settings: Settings, progress: Progress) -> dict[str, Any]:
    """Produce items to the input topics (dead letters to the dead-letter topic); the counts."""
    from runners.services._kafka import ensure_topics

    k = settings.kafka
    topics = {"events": k.events_topic, "profiles": k.profiles_topic,
              "dead_letters": k.dead_letters_topic, "catalog_changes": k.catalog_changes_topic}
    ensure_topics(k, topics.values(), k.partitions)
    producer = open_producer(k)
    failures: list[BaseException] = []
    counts = {"events": 0, "profiles": 0, "dead_letters": 0, "catalog_changes": 0}
    try:
        for item in items:
            if isinstance(item, BehaviourEvent):
                kind, key, value = "events", item.customer_id.encode(), encode_event(item)
            elif isinstance(item, CustomerProfile):
                kind, key, value = "profiles", item.customer_id.encode(), encode_profile(item)
            elif isinstance(item, CatalogChange):   # keyed by product (the product stage's key)
                kind, key, value = ("catalog_changes", item.product_id.encode(),
                                    encode_change(item))
            else:
                kind, key, value = "dead_letters", None, encode_dead_letter(item)
            producer.send(topics[kind], key=key, value=value).add_errback(failures.append)
            counts[kind] += 1
            progress.tick(counts)
        producer.flush()
    finally:
        producer.close()
    if failures:
        print(f"replay: {len(failures)} sends failed, first: {failures[0]!r}", file=sys.stderr)
    return {**counts, "failed": len(failures)}
