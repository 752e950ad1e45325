"""Hostile sizes and a tombstone through the PyFlink topology on the local runner and the real
Kafka (DESIGN.md section 8): the job finishes, every output fits the topics' max.message.bytes,
bad records are dead letters with a reason."""

from __future__ import annotations

import argparse

import pytest

from pipelines.flink_pipeline import run_kafka
from runners.services import ensure_topics, kafka_connector_jar
from tests.builders import CART_DELAY, T0, add, profile
from tests.pipelines.test_flink_pipeline import consume, kafka_settings
from transforms.codec import decode_dead_letter, decode_payload, encode_event, encode_profile
from transforms.model import R_DECODE, R_EMPTY


@pytest.mark.integration
@pytest.mark.engine
def test_tombstones_and_hostile_sizes_never_fail_the_flink_job(kafka):
    from kafka import KafkaProducer

    s = kafka_settings(kafka, **{"core.max_output_bytes": "90000"})
    k = s.kafka
    ensure_topics(kafka, [k.events_topic], 1, configs={"max.message.bytes": "4000000"})
    ensure_topics(kafka, [k.profiles_topic], 1)
    ensure_topics(kafka, [k.payloads_topic, k.audit_topic, k.dead_letters_topic,
                          k.outcomes_topic], 1,
                  configs={"max.message.bytes": "100000"})
    producer = KafkaProducer(bootstrap_servers=kafka, max_request_size=8 * 1024 * 1024)
    producer.send(k.profiles_topic, key=b"c1",
                  value=encode_profile(profile(T0 - 1, name="Ada\r\n" + "n" * 2000)))
    events = [add(T0 + i, pid=f"{i:04d}" + "p" * 1996) for i in range(300)]
    events.append(add(T0 + 10 * CART_DELAY, cid="c2"))
    for ev in events:
        producer.send(k.events_topic, key=ev.customer_id.encode(), value=encode_event(ev))
    producer.send(k.events_topic, key=b"gone", value=None)
    producer.send(k.events_topic, key=b"junk", value=b"\x02" + b"\xff" * 1_500_000)
    producer.flush()
    producer.close()
    n = 1 + len(events) + 2

    options = argparse.Namespace(runner="flink", max_events=n, until_idle=None,
                                 from_beginning=True, savepoint=None, detached=False)
    assert run_kafka(s, [kafka_connector_jar(s)], options) == 0

    (record,) = consume(s, k.payloads_topic)
    assert len(record.value) <= 90_000
    payload = decode_payload(record.value)
    assert payload.customer_id == "c1" and payload.fallback
    assert payload.recipient_name is not None and "\n" not in payload.recipient_name
    dead = [decode_dead_letter(r.value) for r in consume(s, k.dead_letters_topic, idle_ms=1000)]
    assert sorted(d.reason for d in dead) == [R_DECODE, R_EMPTY]
    big = next(d for d in dead if d.reason == R_DECODE)
    assert big.raw_length == 1_500_001 and len(big.raw) == s.core.max_dead_letter_raw
