"""The keyed floor of runners/bench/flink.py as a cluster job: `flink run -py` this file.

    ARGS: the same as pipelines/flink_job.py (--set section.key=value ..., --max-events N,
          --from-beginning, --group-id G, --job-name NAME)

It builds `_keyed_floor_job` (Kafka keyed by the record key -> one Python keyed function that
only reads/writes its state and sets/fires a timer per record -> Kafka) on the cluster the
client points at, so that runners/bench/flink_scale.py measures what the engine alone scales to
on the same standalone cluster, topics and parallelism as the topology.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# `flink run -py` runs this file as a script: make the project importable from a checkout.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pipelines.flink_job import parse  # noqa: E402
from pipelines.flink_kafka import kafka_read  # noqa: E402
from pipelines.flink_pipeline import make_env  # noqa: E402
from runners.bench.flink import _keyed_floor_job  # noqa: E402
from transforms.settings import load_settings  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    """Build and execute the keyed floor on the cluster the client was pointed at."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.max_events is None:
        raise SystemExit("flink_floor_job.py: --max-events N is required (a bounded read)")
    settings = load_settings(None, {}, args.overrides)
    env = make_env(settings, local=False)
    _keyed_floor_job(env, settings, kafka_read(settings, args))
    env.execute(args.job_name)


if __name__ == "__main__":
    main()
