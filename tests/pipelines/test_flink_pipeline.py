"""The PyFlink adapter's own pieces: the split of partitions over subtasks (pure, milliseconds);
and `personalize run --runner flink` on the local mini-cluster through the real Kafka
(integration)."""

from __future__ import annotations

import argparse
import os

import pytest

from pipelines import wire
from pipelines.flink_kafka import KafkaRead, stopping_offsets
from pipelines.flink_operators import split_owner
from pipelines.flink_pipeline import run_kafka
from runners.services import kafka_connector_jar
from tests.conftest import unique_name
from transforms.codec import decode_payload
from transforms.settings import Settings, load_settings


def test_partitions_are_split_over_source_subtasks_as_the_kafka_connector_does():
    # The values of the connector's KafkaSourceEnumerator.getSplitOwner (Java's hashCode).
    assert [split_owner("ft-abc-events", p, 3) for p in range(4)] == [1, 2, 0, 1]
    assert [split_owner("personalize-événements", p, 3) for p in range(4)] == [0, 1, 2, 0]
    assert [split_owner("x", p, 5) for p in range(4)] == [0, 1, 2, 3]
    assert {split_owner("behaviour-events", p, 1) for p in range(4)} == {0}


# ------------------------------------------------------------------------------ with Kafka


def kafka_settings(bootstrap: str, **extra: str) -> Settings:
    """Settings whose topics, group and transactional ids are this test's own, over those the
    services run with (PERSONALIZE_* variables, as tests/conftest.py: the cluster's ports and
    state folder). Customer ids carry the random tag, so no holdout group: which of them
    would be in it would change from run to run (the holdout has its own parity tests)."""
    tag = unique_name("ft")
    pairs = [f"kafka.bootstrap={bootstrap}", f"kafka.group_id={tag}",
             f"flink.transactional_id_prefix={tag}", "flink.checkpoint_interval=1s",
             "core.holdout_share=0"]
    for name in ("events", "profiles", "payloads", "audit", "dead_letters", "outcomes",
                 "catalog_changes"):
        pairs.append(f"kafka.{name}_topic={tag}-{name}")
    pairs += [f"{k}={v}" for k, v in extra.items()]
    return load_settings(None, os.environ).with_overrides(pairs)


def produce(settings: Settings, items: list, partitions: int = 2) -> int:
    """Create the job's topics and write `items` (Avro; dead letters as garbage bytes)."""
    from pipelines.connections import open_producer
    from runners.services import ensure_topics
    from transforms.codec import encode_event, encode_profile
    from transforms.model import CustomerProfile, DeadLetter

    k = settings.kafka   # its security settings too (tests/integration/test_secure_kafka.py)
    ensure_topics(k, [k.events_topic, k.payloads_topic, k.audit_topic, k.dead_letters_topic,
                      k.outcomes_topic], partitions)
    ensure_topics(k, [k.profiles_topic], 1)
    producer = open_producer(k)
    for item in items:
        if isinstance(item, DeadLetter):
            producer.send(k.events_topic, b"\x02\x03truncated")
        elif isinstance(item, CustomerProfile):
            producer.send(k.profiles_topic, key=item.customer_id.encode(),
                          value=encode_profile(item))
        else:
            producer.send(k.events_topic, key=item.customer_id.encode(), value=encode_event(item))
    producer.flush()
    producer.close()
    return len(items)


def consume(settings: Settings, topic: str, idle_ms: int = 3000) -> list:
    """Every committed record of `topic` (read_committed, from the beginning)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             consumer_timeout_ms=idle_ms, group_id=None)
    try:
        return list(consumer)
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.engine
def test_run_with_the_local_runner_reads_and_writes_kafka_exactly_once(kafka):
    from tests.pipelines.test_parity_flink import JOURNEY_TRIGGERS, journeys

    s = kafka_settings(kafka)
    tag = s.kafka.group_id
    n = produce(s, journeys(tag))
    assert stopping_offsets(s, KafkaRead(from_beginning=True), 3) != stopping_offsets(
        s, KafkaRead(from_beginning=True), n)
    options = argparse.Namespace(runner="flink", max_events=n, until_idle=None,
                                 from_beginning=True, savepoint=None, detached=False)
    assert run_kafka(s, [kafka_connector_jar(s)], options) == 0
    payloads = consume(s, s.kafka.payloads_topic)
    by_trigger = {decode_payload(r.value).trigger.type: r for r in payloads}
    assert set(by_trigger) == JOURNEY_TRIGGERS
    cart = by_trigger["cart_abandonment"]
    assert cart.key == f"{tag}-cart".encode()
    message_id = decode_payload(cart.value).message_id.encode()
    assert dict(cart.headers)[wire.MESSAGE_ID_HEADER] == message_id
    audit = consume(s, s.kafka.audit_topic, idle_ms=1000)
    assert len(audit) == 5  # 3 about carts and browsing, the buyer's post-purchase and win-back
    dead = consume(s, s.kafka.dead_letters_topic, idle_ms=1000)
    assert any(b"decode_error" in r.value for r in dead)
