"""The jobs the Flink benchmark compares carry every record (a rate of a job that drops records
would mean nothing): the pass-through, the keyed floor and the fused bound, through the real
Kafka."""

from __future__ import annotations

import pytest

from runners.bench import flink as bench_flink
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


@pytest.mark.integration
@pytest.mark.engine
def test_the_fused_bound_does_the_cores_work(kafka):
    """The fused job keys and times in Java from the Kafka record (key, timestamp) but runs
    the real decoder and PerCustomer: on in-order input it emits the reference's payloads."""
    from pipelines.common import build_core
    from pipelines.reference import ReferenceRunner
    from transforms.codec import decode_payload
    from transforms.model import PAYLOAD

    s = bench_flink.bench_settings(load_settings(None), [f"kafka.bootstrap={kafka}"])
    items = list(bench_flink.workload(3000))
    n = bench_flink.produce_items(s, items)
    expected = []
    runner = ReferenceRunner(
        build_core(s), lambda out: expected.append(out[1].message_id) if out[0] == PAYLOAD else None
    )
    for item in items:
        runner.feed(item)
    runner.finish()

    bench_flink._timed_run(s, "fused", n)
    out = consume(s, f"{s.kafka.payloads_topic}-passthrough")
    got = sorted(decode_payload(r.value).message_id for r in out)
    assert len(expected) > 20 and got == sorted(expected)


@pytest.mark.integration
@pytest.mark.engine
def test_the_topology_runs_the_product_stage_only_with_a_catalog_topic_of_the_runs_own(kafka):
    """The bench's topics include a catalog-changes topic of its own, absent until
    `with_catalog`: the broker's shared one (which the services create) is not read, and the
    "topology" row is a deployment without a catalog stream, "products" one with."""
    from pipelines.flink_kafka import KafkaRead, stopping_offsets
    from pipelines.flink_pipeline import build_kafka_job, make_env
    from runners.services import kafka_connector_jar

    s = bench_flink.bench_settings(load_settings(None), [f"kafka.bootstrap={kafka}"])
    assert s.kafka.catalog_changes_topic.endswith("-catalog_changes")
    n = bench_flink.produce_items(s, bench_flink.workload(50))

    def plan() -> str:
        read = KafkaRead(from_beginning=True, group_id=f"{s.kafka.group_id}-plan")
        read.stop = stopping_offsets(s, read, n)
        env = make_env(s, [kafka_connector_jar(s)])
        build_kafka_job(env, s, read)
        return env.get_execution_plan()

    assert "PerCustomer" in plan() and "PerProduct" not in plan()
    bench_flink.with_catalog(s)
    assert "PerProduct" in plan()
