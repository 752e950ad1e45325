"""The entry file a Flink cluster runs: `flink run -py pipelines/flink_job.py ... ARGS`.

    ARGS: --set section.key=value ... (every setting; see runners/flink_cluster.job_args)
          [--max-events N | --until-idle S] [--from-beginning] [--savepoint PATH]
          [--group-id G] [--feature-store]

It builds the same Kafka job as `personalize run --runner flink` (pipelines.flink_pipeline),
without the local-only configuration: the jar comes from `--jarfile`, the code from `--pyFiles`,
the interpreter from the cluster's python.executable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# `flink run -py` runs this file as a script: make the project importable from a checkout too
# (on the TaskManagers the --pyFiles archive provides it).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pipelines.flink_kafka import kafka_read  # noqa: E402
from pipelines.flink_pipeline import build_kafka_job, make_env  # noqa: E402
from transforms.settings import load_settings  # noqa: E402


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The job's arguments."""
    p = argparse.ArgumentParser(prog="flink_job.py")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--max-events", type=int, default=None)
    p.add_argument("--until-idle", type=float, default=None)
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--savepoint", default=None)
    p.add_argument("--group-id", default=None)
    p.add_argument("--feature-store", action="store_true")
    p.add_argument("--job-name", default="personalize")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Build and execute the job on the cluster the client was pointed at."""
    args = parse(sys.argv[1:] if argv is None else argv)
    settings = load_settings(None, {}, args.overrides)
    extra = {"execution.state-recovery.path": args.savepoint} if args.savepoint else {}
    env = make_env(settings, local=False, extra=extra)
    writer = None
    if args.feature_store:
        from pipelines.feature_store import redis_writer

        writer = redis_writer(settings)
    build_kafka_job(env, settings, kafka_read(settings, args), writer)
    env.execute(args.job_name)


if __name__ == "__main__":
    main()
