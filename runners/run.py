"""`personalize run`: the streaming job on Kafka, on the engine of your choice.

    personalize run --runner direct          Beam DirectRunner, in this process
    personalize run --runner flink           PyFlink local mini-cluster, in this process
    personalize run --runner flink-cluster   submitted to the standalone cluster
                                             (start it with `personalize services up`)

Options are this command's parsed arguments; Kafka runs are online (the Redis catalog and
feature store).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from transforms.settings import Settings

ENGINES = ("direct", "flink", "flink-cluster")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `run` to the CLI."""
    p = sub.add_parser(
        "run",
        parents=parents,
        help="run the streaming job: Kafka in, payloads out",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runner", choices=sorted(ENGINES), default="direct", help="engine (default: direct)"
    )
    p.add_argument(
        "--max-events",
        type=int,
        default=None,
        metavar="N",
        help="stop after N input records (bounded runs, tests)",
    )
    p.add_argument(
        "--until-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop when no input arrived for SECONDS (then flush all deadlines)",
    )
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="read topics from the earliest offset when the consumer group has none",
    )
    p.add_argument("--savepoint", metavar="PATH", help="flink-cluster: resume from this savepoint")
    p.add_argument("--detached", action="store_true", help="flink-cluster: submit and return")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the engine's Kafka job; print its summary."""
    if args.runner == "flink-cluster":
        from runners.flink_cluster import submit_to_cluster

        args.feature_store = True
        print(f"submitted flink job {submit_to_cluster(online(settings), args)}")
        return 0
    if args.runner == "flink":
        from pipelines.flink_pipeline import run_kafka
        from runners.services import ensure_topics, kafka_connector_jar

        args.feature_store = True
        k = settings.kafka
        ensure_topics(k, [k.outcomes_topic], k.partitions)   # newer than some deployments
        return run_kafka(online(settings), [kafka_connector_jar(settings)], args)
    summary = run_engine(settings, args)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def online(settings: Settings) -> Settings:
    """Settings of a Kafka run: the core reads the Redis catalog."""
    return settings.with_overrides(["redis.use_catalog=true"])


def run_engine(settings: Settings, options: argparse.Namespace) -> dict[str, Any]:
    """Run the Beam job on Kafka (to its end, with bounded options); its summary.

    Kafka runs are online: the core reads the Redis catalog (unless paths.catalog names a
    file) and feature snapshots, erasures and consent changes go to the Redis feature store.
    """
    from pipelines.beam_kafka import run_kafka_job
    from pipelines.feature_store import redis_writer
    from runners.services import ensure_topics

    settings = online(settings)
    return run_kafka_job(settings, options, feature_writer=redis_writer(settings), progress=True,
                         create_topics=ensure_topics)
