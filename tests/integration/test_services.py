"""The real local services: Kafka round trip, Redis round trip, a PyFlink job on the cluster."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from runners import cli, services
from tests.conftest import unique_name

pytestmark = pytest.mark.integration

# A PyFlink DataStream job, Kafka to Kafka through the connector jar: upper-cases each value
# of a bounded read of the source topic. It runs inside the cluster with the venv's python.
KAFKA_UPPER_JOB = """
import sys

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)


def main(bootstrap, source_topic, sink_topic):
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(source_topic)
        .set_group_id("it-" + source_topic)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(sink_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "ReadSource")
        .map(lambda value: value.upper(), output_type=Types.STRING())
        .name("UpperCase")
        .sink_to(sink)
        .name("WriteSink")
    )
    env.execute("it-kafka-upper-" + source_topic)


if __name__ == "__main__":
    main(*sys.argv[1:4])
"""


def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Every record of `topic` from the beginning, once `expected` have arrived (or time is up)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        ids = sorted(consumer.partitions_for_topic(topic))
        partitions = [TopicPartition(topic, p) for p in ids]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_job_topics_exist_with_configured_partitions(kafka, service_settings):
    from kafka.admin import KafkaAdminClient

    k = service_settings.kafka
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        names = [k.events_topic, k.payloads_topic, k.dead_letters_topic]
        described = {t["name"]: t for t in admin.describe_topics(names)}
    finally:
        admin.close()
    assert set(described) == {k.events_topic, k.payloads_topic, k.dead_letters_topic}
    for topic in described.values():
        assert len(topic["partitions"]) == k.partitions


def test_kafka_keyed_round_trip_keeps_partition_affinity(kafka, new_topic):
    from kafka import KafkaProducer

    topic = new_topic("it-roundtrip", partitions=3)
    keys = [f"customer-{i}" for i in range(12)]
    sent = [(key, f"{key}:{n}") for n in range(5) for key in keys]
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    try:
        produced_partition = {}
        for key, value in sent:
            meta = producer.send(topic, key=key.encode(), value=value.encode()).get(timeout=10)
            assert produced_partition.setdefault(key, meta.partition) == meta.partition
        producer.flush()
    finally:
        producer.close()

    records = _consume_all(kafka, topic, len(sent))

    assert sorted((r.key.decode(), r.value.decode()) for r in records) == sorted(sent)
    partitions_of = defaultdict(set)
    values_of = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions_of[record.key.decode()].add(record.partition)
        values_of[record.key.decode()].append(record.value.decode())
    assert all(partitions_of[k] == {produced_partition[k]} for k in keys)
    assert len(set(produced_partition.values())) == 3  # 12 keys spread over all partitions
    assert all(values_of[k] == [f"{k}:{n}" for n in range(5)] for k in keys)  # per-key order


def test_kafka_does_not_create_topics_on_use(kafka):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaTimeoutError

    topic = unique_name("it-not-created")
    producer = KafkaProducer(bootstrap_servers=kafka, max_block_ms=2000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(topic, b"x").get(timeout=5)
    finally:
        producer.close(timeout=1)
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        assert topic not in admin.list_topics()
    finally:
        admin.close()


def test_ensure_topics_is_idempotent(kafka, new_topic):
    topic = new_topic("it-ensure", partitions=2)
    assert services.ensure_topics(kafka, [topic], 2) == []


def test_redis_round_trip(redis_client):
    key = unique_name("it:redis")
    try:
        redis_client.hset(key, mapping={"views_1h": 3, "score": "42.5"})
        redis_client.expire(key, 60)
        assert redis_client.hgetall(key) == {b"views_1h": b"3", b"score": b"42.5"}
        assert 0 < redis_client.ttl(key) <= 60
    finally:
        redis_client.delete(key)
    assert redis_client.exists(key) == 0


def test_pyflink_job_on_the_cluster_reads_and_writes_kafka(
    flink_cluster, kafka, new_topic, service_settings, tmp_path: Path
):
    source, sink = new_topic("it-flink-in", partitions=2), new_topic("it-flink-out")
    from kafka import KafkaProducer

    values = [f"event-{n}" for n in range(20)]
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    try:
        for value in values:
            producer.send(source, value.encode())
        producer.flush()
    finally:
        producer.close()
    job_file = tmp_path / "kafka_upper.py"
    job_file.write_text(KAFKA_UPPER_JOB)

    job_id = flink_cluster.submit(
        job_file, args=[kafka, source, sink], jars=[services.kafka_connector_jar(service_settings)]
    )
    try:
        assert flink_cluster.wait_job(job_id, timeout=180) == "FINISHED"
    finally:
        flink_cluster.cancel(job_id)

    records = _consume_all(kafka, sink, len(values))
    assert sorted(r.value.decode() for r in records) == sorted(v.upper() for v in values)
    assert any(job["jid"] == job_id for job in flink_cluster.jobs())


def test_services_status_command_reports_running(kafka, redis_client, flink_cluster, capsys):
    assert cli.main(["services", "status"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["redis", "running"],
        ["kafka", "running"],
        ["flink", "running"],
    ]


def test_terminate_kills_the_process_group_that_ignores_sigterm(tmp_path: Path):
    from runners.services._proc import alive, spawn, terminate

    script = 'trap "" TERM; sleep 60 & echo $! > child.pid; wait'
    proc = spawn(["bash", "-c", script], tmp_path / "out.log", cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())

    assert terminate([proc.pid], timeout=1.0) == [proc.pid]  # needed SIGKILL
    proc.wait(timeout=5)
    assert not alive(child)  # the whole group went, not just its leader
