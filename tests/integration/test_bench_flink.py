"""The jobs the Flink benchmark compares carry every record (a rate of a job that drops records
would mean nothing): the pass-through and the keyed floor, through the real Kafka."""

from __future__ import annotations

import pytest

from runners import bench_flink
from tests.pipelines.test_flink_pipeline import consume
from transforms.settings import load_settings


@pytest.mark.integration
@pytest.mark.engine
def test_the_pass_through_and_the_keyed_floor_write_each_record_once(kafka):
    s = bench_flink.bench_settings(load_settings(None), [f"kafka.bootstrap={kafka}"])
    n = bench_flink.produce_items(s, bench_flink.workload(300))
    cpu: dict[str, float] = {}
    bench_flink._timed_run(s, "passthrough", n)
    bench_flink._timed_run(s, "floor", n, cpu)
    out = consume(s, f"{s.kafka.payloads_topic}-passthrough")
    values = sorted(r.value for r in out)
    assert len(values) == 2 * n
    assert values[0::2] == values[1::2]          # each record once by each job
    assert cpu.get("s", 0) > 0                   # the mini-cluster's CPU was measured
