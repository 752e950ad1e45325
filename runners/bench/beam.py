"""Benchmark of the Beam topology over Kafka against an empty Beam pass-through, in one run.

    bench_beam(settings, n_events) -> {"topology": {...}, "passthrough": {...}, "ratio": float}

Both read the same records from the same two fresh topics (the first `n_events` items of the
shipped rees46 data, Avro, profiles synthesized) with the same source (pipelines/beam_kafka.py:
TestStream service over kafka-python, Acknowledge step) and the same Kafka sink code. The
pass-through writes every record back to an output topic with nothing in between; the topology
decodes, keys, runs the core and writes payloads, audit and dead letters. Each side has its own
consumer group and reads from the beginning; its rate is records read / seconds from its first
record to the end of its pipeline (the end-of-input flush of every pending deadline included).
The design target (DESIGN.md section 7) is a ratio of at least 0.5.
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam

from pipelines.beam_kafka import KafkaSource, ReadOptions, run_kafka_job
from pipelines.beam_local import Local, tally
from pipelines.beam_pipeline import run_to_end, streaming_options
from pipelines.beam_sinks import WriteToKafka
from pipelines.wire import EVENTS, PROFILES
from runners import SHIPPED_DATA as DATA
from transforms.codec import encode_event, encode_profile
from transforms.model import BehaviourEvent, CustomerProfile
from transforms.readers import read_rees46
from transforms.settings import KafkaSettings, Settings


def bench_beam(settings: Settings, n_events: int, data: Path | None = None,
               profile: str | None = None) -> dict[str, Any]:
    """Produce `n_events` records to fresh topics, run the pass-through, then the topology
    (under cProfile, every thread, when `profile` names a file for the stats)."""
    from pipelines.connections import open_producer
    from runners.services._kafka import ensure_topics

    k = settings.kafka
    run = uuid.uuid4().hex[:10]
    topics = {EVENTS: f"bench-beam-events-{run}", PROFILES: f"bench-beam-profiles-{run}"}
    bench = settings.with_overrides(
        [
            f"kafka.payloads_topic=bench-beam-payloads-{run}",
            f"kafka.audit_topic=bench-beam-audit-{run}",
            f"kafka.dead_letters_topic=bench-beam-dead-letters-{run}",
            f"kafka.outcomes_topic=bench-beam-outcomes-{run}",
        ]
    )
    ensure_topics(k, topics.values(), k.partitions)
    producer = open_producer(k)
    sent = 0
    try:
        for item in itertools.islice(read_rees46(data or DATA), n_events):
            if isinstance(item, BehaviourEvent):
                producer.send(
                    topics[EVENTS], key=item.customer_id.encode(), value=encode_event(item)
                )
            elif isinstance(item, CustomerProfile):
                producer.send(
                    topics[PROFILES], key=item.customer_id.encode(), value=encode_profile(item)
                )
            else:
                continue
            sent += 1
        producer.flush()
    finally:
        producer.close()

    output = f"bench-beam-pass-{run}"
    try:
        passthrough = run_passthrough(bench, topics, output, sent)
        topology = _timed(
            lambda read: _profiled(profile, lambda: run_kafka_job(
                bench, read, topics=topics, group_id=f"bench-beam-topology-{run}",
                create_topics=ensure_topics,
            )),
            sent,
        )
    finally:
        b = bench.kafka
        _delete_topics(k, [*topics.values(), output, b.payloads_topic, b.audit_topic,
                                     b.dead_letters_topic, b.outcomes_topic])
    ratio = topology["per_s"] / passthrough["per_s"] if passthrough["per_s"] else None
    return {
        "records": sent,
        "topology": topology,
        "passthrough": passthrough,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "target": 0.5,
    }


def run_passthrough(
    settings: Settings, topics: dict[str, str], output: str, n: int
) -> dict[str, Any]:
    """The empty topology: the same source and Kafka sink, the records written back unchanged."""
    from runners.services._kafka import ensure_topics

    ensure_topics(settings.kafka, [output], settings.kafka.partitions)

    def job(read: ReadOptions) -> dict[str, Any]:
        local = Local()
        started = time.monotonic()
        try:
            with KafkaSource(settings, read, local, topics, group_id=f"{output}-group") as source:
                p = beam.Pipeline(options=streaming_options())
                inputs = p | "ReadKafka" >> source.read()
                (
                    (inputs[EVENTS], inputs[PROFILES])
                    | "MergeInputs" >> beam.Flatten()
                    | "Identity" >> beam.Map(lambda element: element)
                    | "WriteRecords"
                    >> WriteToKafka(local, settings.kafka, output, _raw_record, "records")
                )
                run_to_end(p)
                first = source.reader.first_record_at
                return {
                    "read": source.reader.read,
                    "written": tally(local).snapshot().get("records", 0),
                    "first_record_after_s": None if first is None else first - started,
                }
        finally:
            local.close()

    return _timed(job, n)


def _profiled(path: str | None, job: Any) -> Any:
    """`job()`, under cProfile in every thread it starts when `path` is given (the
    DirectRunner runs bundles on its own threads); the merged stats are dumped to `path`."""
    if path is None:
        return job()
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []

    def start(*_: Any) -> None:
        sys.setprofile(None)
        prof = cProfile.Profile()
        profiles.append(prof)
        prof.enable()

    main = cProfile.Profile()
    threading.setprofile(start)
    main.enable()
    try:
        return job()
    finally:
        main.disable()
        threading.setprofile(None)     # type: ignore[arg-type]
        stats = pstats.Stats(main)
        for prof in profiles:
            try:
                stats.add(prof)
            except (TypeError, ValueError):   # a thread's profiler with nothing recorded
                pass
        stats.dump_stats(path)


def _delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    """Remove the benchmark's topics (best effort: a failure leaves them, it is not an error)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from pipelines.connections import kafka_client_config

    try:
        admin = KafkaAdminClient(**kafka_client_config(kafka), client_id="bench-beam-cleanup")
    except KafkaError:
        return
    try:
        admin.delete_topics(names, raise_errors=False)
    except KafkaError:
        pass
    finally:
        admin.close()


def _raw_record(element: tuple[Any, int | None, int | None]) -> tuple[bytes | None, bytes]:
    record = element[0]
    return None, record.value


def _timed(job: Any, n: int) -> dict[str, Any]:
    """Run `job(ReadOptions)` bounded to n records; its rate from its first record on."""
    read = ReadOptions(max_events=n, until_idle=30.0, from_beginning=True)
    started = time.monotonic()
    result = job(read)
    wall = time.monotonic() - started
    seconds = wall - (result.get("first_record_after_s") or 0.0)
    return {
        "read": result["read"],
        "seconds": round(seconds, 3),
        "per_s": round(result["read"] / seconds, 1),
        "wall_seconds": round(wall, 3),
        **{
            k: v
            for k, v in result.items()
            if k in ("written", "payloads", "audit", "dead_letters", "features")
        },
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m runners.bench.beam [N] [--config FILE] [--set K=V] [--profile FILE]`: print
    both rates and the ratio. Settings as for `personalize` (file, environment, --set)."""
    import argparse
    import json
    import os

    from transforms.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m runners.bench.beam",
                                     description=main.__doc__)
    parser.add_argument("n", nargs="?", type=int, default=5000, help="records (default 5000)")
    parser.add_argument("--config", help="settings file (TOML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the topology's run, in every thread it starts (the "
                             "DirectRunner runs bundles on threads of its own), and write "
                             "the merged stats to FILE (read them with pstats)")
    args = parser.parse_args(argv)
    settings = load_settings(args.config, os.environ, args.overrides)
    result = bench_beam(settings, args.n, profile=args.profile)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
