"""The PyFlink adapter's own pieces: the source clock (pure, milliseconds); and `personalize run
--runner flink` on the local mini-cluster through the real Kafka (integration)."""

from __future__ import annotations

import argparse
import os

import pytest

from pipelines import wire
from pipelines.flink_kafka import KafkaRead, stopping_offsets
from pipelines.flink_pipeline import (
    LONG_MIN,
    SourceClock,
    run_kafka,
    split_owner,
)
from runners.services import kafka_connector_jar
from tests.builders import SECOND, T0
from tests.conftest import unique_name
from transforms.codec import decode_payload
from transforms.settings import Settings, load_settings

OOO = 10 * SECOND
IDLE = 2 * SECOND
WALL = 1_000_000            # a wall-clock instant (ms); only differences matter


def test_clock_is_the_reference_watermark_for_one_partition():
    clock = SourceClock(OOO, 0)
    assert clock.watermark is None and clock.stamp == LONG_MIN + OOO + 1
    clock.observe("file", T0, WALL)
    clock.observe("file", T0 - 5 * SECOND, WALL)          # out of order: never moves back
    assert clock.watermark == T0 - OOO - 1
    assert clock.stamp == T0                               # Flink's watermark = the clock


def test_clock_is_held_by_the_lagging_partition_and_by_partitions_not_read_yet():
    clock = SourceClock(OOO, IDLE)
    clock.expect([0, 1], WALL)
    clock.observe(0, T0 + 3600 * SECOND, WALL)
    assert clock.watermark is None                         # partition 1 not read yet
    assert clock.horizon == T0 + 3600 * SECOND - OOO - 1   # but the future is judged by 0
    clock.observe(1, T0, WALL + 10)
    assert clock.watermark == T0 - OOO - 1                 # the minimum of both


def test_an_idle_partition_stops_holding_the_clock():
    clock = SourceClock(OOO, IDLE)
    clock.expect([0, 1], WALL)
    clock.observe(1, T0, WALL)
    clock.observe(0, T0 + 60 * SECOND, WALL + 100)
    assert clock.watermark == T0 - OOO - 1
    clock.observe(0, T0 + 120 * SECOND, WALL + IDLE + 1)   # 1 delivered nothing for `idleness`
    assert clock.watermark == T0 + 120 * SECOND - OOO - 1


def test_a_record_is_judged_by_the_watermark_of_its_own_partition():
    clock = SourceClock(OOO, IDLE)
    clock.expect([0, 1], WALL)
    assert clock.partition_watermark(0) is None
    clock.observe(0, T0 + 300 * SECOND, WALL)
    # Partition 1 not read yet holds the overall clock, not partition 0's own: a record of 0
    # three minutes behind what 0 already delivered is late whatever 1 does.
    assert clock.watermark is None
    assert clock.partition_watermark(0) == T0 + 300 * SECOND - OOO - 1
    clock.observe(1, T0 + 7200 * SECOND, WALL)
    assert clock.partition_watermark(0) == T0 + 300 * SECOND - OOO - 1   # 1 ahead: no matter


def test_a_bounded_read_holds_each_partition_until_its_last_record_whatever_the_wall_clock():
    clock = SourceClock(OOO, IDLE)
    clock.expect([0, 1], WALL, start={0: 0, 1: 0}, end={0: 3, 1: 1}, bounded=True)
    clock.observe(0, T0 + 3600 * SECOND, WALL + 100, offset=0)
    clock.observe(0, T0 + 3660 * SECOND, WALL + 60 * IDLE, offset=1)      # 1 fetched late
    assert clock.watermark is None
    clock.observe(1, T0, WALL + 60 * IDLE, offset=0)                       # 1's only record
    assert clock.watermark == T0 + 3660 * SECOND - OOO - 1                  # 1 is done
    clock.observe(0, T0 + 3700 * SECOND, WALL + 60 * IDLE, offset=2)       # all read
    assert clock.watermark == T0 + 3700 * SECOND - OOO - 1


def test_an_unbounded_backlog_holds_the_clock_past_idleness_but_a_caught_up_partition_not():
    clock = SourceClock(OOO, IDLE, hold=30 * IDLE)
    clock.expect([0, 1, 2], WALL, start={0: 0, 1: 0, 2: 7}, end={0: 9, 1: 5, 2: 8})
    clock.observe(0, T0 + 60 * SECOND, WALL + 3 * IDLE, offset=0)
    assert clock.watermark is None              # 1 has records left: it holds past idleness
    clock.observe(1, T0, WALL + 4 * IDLE, offset=0)
    assert clock.watermark == T0 - OOO - 1      # 2 (one offset left: a commit marker) does not
    clock.set_ends({1: 1})                      # the broker: 1 was read to its end
    clock.observe(0, T0 + 90 * SECOND, WALL + 6 * IDLE, offset=1)
    assert clock.watermark == T0 + 90 * SECOND - OOO - 1
    clock.set_ends({1: 50})                     # 1 has records again but delivers none
    clock.observe(0, T0 + 95 * SECOND, WALL + 20 * IDLE, offset=2)
    assert clock.watermark == T0 + 90 * SECOND - OOO - 1
    clock.observe(0, T0 + 99 * SECOND, WALL + 35 * IDLE, offset=3)       # ... for `hold`
    assert clock.watermark == T0 + 99 * SECOND - OOO - 1


def test_after_a_restore_a_partition_read_to_its_end_stops_holding_with_its_committed_offset():
    # The group's committed offset (the start guess) lags the restored position: partition 1
    # seems to have records left, delivers none, and holds until the committed offset moves.
    clock = SourceClock(OOO, IDLE)
    clock.expect([0, 1], WALL, start={0: 10, 1: 3}, end={0: 12, 1: 5}, bounded=True)
    clock.observe(0, T0, WALL, offset=10)
    assert clock.waiting() == [1] and clock.watermark is None
    clock.set_starts({1: 5})                     # a checkpoint of the restored job committed
    assert clock.waiting() == []
    clock.observe(0, T0 + 60 * SECOND, WALL + 10, offset=11)
    assert clock.watermark == T0 + 60 * SECOND - OOO - 1


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
    state folder)."""
    tag = unique_name("ft")
    pairs = [f"kafka.bootstrap={bootstrap}", f"kafka.group_id={tag}",
             f"flink.transactional_id_prefix={tag}", "flink.checkpoint_interval=1s"]
    for name in ("events", "profiles", "payloads", "audit", "dead_letters"):
        pairs.append(f"kafka.{name}_topic={tag}-{name}")
    pairs += [f"{k}={v}" for k, v in extra.items()]
    return load_settings(None, os.environ).with_overrides(pairs)


def produce(settings: Settings, items: list, partitions: int = 2) -> int:
    """Create the job's topics and write `items` (Avro; dead letters as garbage bytes)."""
    from kafka import KafkaProducer

    from runners.services import ensure_topics
    from transforms.codec import encode_event, encode_profile
    from transforms.model import CustomerProfile, DeadLetter

    k = settings.kafka
    ensure_topics(k.bootstrap, [k.events_topic, k.payloads_topic, k.audit_topic,
                                k.dead_letters_topic], partitions)
    ensure_topics(k.bootstrap, [k.profiles_topic], 1)
    producer = KafkaProducer(bootstrap_servers=k.bootstrap, linger_ms=5)
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
    from tests.pipelines.test_parity_flink import journeys

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
    assert sorted(by_trigger) == ["browse_intensity", "cart_abandonment"]
    cart = by_trigger["cart_abandonment"]
    assert cart.key == f"{tag}-cart".encode()
    message_id = decode_payload(cart.value).message_id.encode()
    assert dict(cart.headers)[wire.MESSAGE_ID_HEADER] == message_id
    audit = consume(s, s.kafka.audit_topic, idle_ms=1000)
    assert len(audit) == 3
    dead = consume(s, s.kafka.dead_letters_topic, idle_ms=1000)
    assert any(b"decode_error" in r.value for r in dead)
