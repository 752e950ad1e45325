"""Robustness: about 10 000 hostile records (tests/hostile.py) through the real Kafka, on Beam and
on Flink. The job keeps running, every record has the reference runner's effect (the same
payloads, audit and dead letters as the reference fed the same records with the same receipt
times), every record that is invalid by construction is a dead letter with a reason, and no
payload is written twice."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipelines import wire
from pipelines.common import build_core
from pipelines.outputs import OutputFiles
from pipelines.reference import ReferenceRunner
from runners.services import ensure_topics
from tests.conftest import unique_name
from tests.hostile import EVENTS, Record, hostile_stream
from transforms.codec import decode_dead_letter, decode_payload
from transforms.model import R_LATE
from transforms.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.engine, pytest.mark.robustness]

EVENT_PARTITIONS = 4
KAFKA_LIMIT = 1_000_000   # the broker's default max.message.bytes is 1 048 588


class Produced:
    """The hostile stream as written: each record with its topic, partition and offset."""

    def __init__(self, settings: Settings, records: list[Record]) -> None:
        from kafka import KafkaProducer

        from runners.services import ensure_topics

        k = settings.kafka
        self.topics = {EVENTS: k.events_topic, "profiles": k.profiles_topic}
        ensure_topics(k.bootstrap, [k.events_topic], EVENT_PARTITIONS)
        ensure_topics(k.bootstrap, [k.profiles_topic], 2)
        ensure_topics(k.bootstrap, [k.payloads_topic, k.audit_topic, k.dead_letters_topic,
                                    k.outcomes_topic], 2)
        producer = KafkaProducer(bootstrap_servers=k.bootstrap, linger_ms=20,
                                 max_request_size=4_000_000)
        futures = [producer.send(self.topics[r.source], key=r.key, value=r.value,
                                 timestamp_ms=r.timestamp) for r in records]
        producer.flush()
        producer.close()
        self.records = records
        self.where = [(m.topic, m.partition, m.offset)
                      for m in (f.get(timeout=30) for f in futures)]


def settings_for(kafka: str) -> Settings:
    tag = unique_name("robust")
    pairs = [f"kafka.bootstrap={kafka}", f"kafka.group_id={tag}",
             f"flink.transactional_id_prefix={tag}", "flink.checkpoint_interval=1s"]
    pairs += [f"kafka.{name}_topic={tag}-{name}"
              for name in ("events", "profiles", "payloads", "audit", "dead_letters")]
    import os

    return load_settings(None, os.environ).with_overrides(pairs)


def reference_outputs(produced: Produced, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """The reference runner fed the same records, decoded as the engines decode them, in the
    order they were produced, each received at its record timestamp."""
    core = build_core(settings)
    received = [0]
    with OutputFiles(out_dir) as out:
        runner = ReferenceRunner(core, out.write, clock=lambda: received[0])
        for record, (topic, partition, offset) in zip(produced.records, produced.where,
                                                      strict=True):
            received[0] = record.timestamp
            item = wire.decode(record.source, record.value, topic, partition, offset,
                               settings.core, record.timestamp)
            out.count_input(item)
            runner.feed(item)
        runner.finish()
    return out.summary


def consume_all(settings: Settings, topic: str) -> list[Any]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             consumer_timeout_ms=4000, group_id=None,
                             fetch_max_bytes=8_000_000, max_partition_fetch_bytes=4_000_000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def check_against_reference(settings: Settings, produced: Produced, ref_dir: Path) -> None:
    k = settings.kafka
    payload_records = consume_all(settings, k.payloads_topic)
    payloads = [decode_payload(r.value) for r in payload_records]
    ids = [p.message_id for p in payloads]
    assert len(ids) == len(set(ids)), "a payload was written twice"
    ref_payloads = [json.loads(line) for line in (ref_dir / "payloads.jsonl").open()]
    assert sorted(ids) == sorted(p["message_id"] for p in ref_payloads)
    assert all(len(r.value) < KAFKA_LIMIT for r in payload_records)

    audit = Counter(_canonical(r.value) for r in consume_all(settings, k.audit_topic))
    ref_audit = Counter(_canonical(line) for line in (ref_dir / "audit.jsonl").open())
    assert audit == ref_audit

    dead = [decode_dead_letter(r.value) for r in consume_all(settings, k.dead_letters_topic)]
    got = Counter((d.reason, d.origin.topic, d.origin.partition, d.origin.offset) for d in dead)
    ref_dead = Counter(
        (d["reason"], d["origin"]["topic"], d["origin"]["partition"], d["origin"]["offset"])
        for d in (json.loads(line) for line in (ref_dir / "dead_letters.jsonl").open()))
    assert got == ref_dead
    check_hostile_effects(produced, dead, payloads)


def _canonical(line: str | bytes) -> str:
    """An audit record's JSON with sorted keys (the topic's and the file's differ in order)."""
    return json.dumps(json.loads(line), sort_keys=True)


def check_hostile_effects(produced: Produced, dead: list[Any], payloads: list[Any]) -> None:
    """What the contract says of each hostile kind, whatever the reference runner does."""
    where_dead = {(d.origin.topic, d.origin.partition, d.origin.offset): d for d in dead}
    kind_at = {w: r.kind for r, w in zip(produced.records, produced.where, strict=True)}
    for record, w in zip(produced.records, produced.where, strict=True):
        if record.expected_bad:
            assert w in where_dead, f"{record.kind} record at {w} is not a dead letter"
            assert where_dead[w].reason and where_dead[w].error
    # Only bit-flipped records may be late: the future-skewed event (inside max_future) made
    # no other customer's event late, and the late revocation was applied, not dead-lettered.
    late = Counter(kind_at.get((d.origin.topic, d.origin.partition, d.origin.offset))
                   for d in dead if d.reason == R_LATE)
    assert set(late) <= {"bit_flip"}, late
    assert all(len(d.raw) <= KAFKA_LIMIT for d in dead)
    by_customer = {p.customer_id: p for p in payloads}
    assert "hostile-revoke" not in by_customer       # unsubscribed before its cart's deadline
    assert "hostile-upper" not in by_customer        # "EMAIL" is the email channel
    cart = by_customer["hostile-cart"]               # the 2 000-item cart: bounded, still sent
    assert len(cart.trigger.evidence) < 2_000
    for cid in ("hostile-name-0", "hostile-name-1"):
        name = by_customer[cid].recipient_name or ""
        assert not any(ord(c) < 32 for c in name) and len(name) < 2_000


@pytest.fixture(scope="module")
def now_ms() -> int:
    return int(time.time() * 1000)


def test_hostile_stream_on_beam_matches_the_reference(kafka, tmp_path, now_ms):
    from pipelines.beam_kafka import ReadOptions, run_kafka_job

    settings = settings_for(kafka)
    produced = Produced(settings, hostile_stream(now_ms))
    assert len(produced.records) >= 10_000
    summary = run_kafka_job(settings, ReadOptions(max_events=len(produced.records),
                                                  from_beginning=True),
                            create_topics=ensure_topics)
    assert summary["read"] == len(produced.records)
    reference_outputs(produced, settings, tmp_path / "ref")
    check_against_reference(settings, produced, tmp_path / "ref")


def test_hostile_stream_on_flink_matches_the_reference(kafka, tmp_path, now_ms):
    from pipelines.flink_pipeline import run_kafka
    from runners.services import kafka_connector_jar

    settings = settings_for(kafka)
    produced = Produced(settings, hostile_stream(now_ms))
    options = argparse.Namespace(runner="flink", max_events=len(produced.records),
                                 until_idle=None, from_beginning=True, savepoint=None,
                                 detached=False)
    assert run_kafka(settings, [kafka_connector_jar(settings)], options) == 0
    reference_outputs(produced, settings, tmp_path / "ref")
    check_against_reference(settings, produced, tmp_path / "ref")
