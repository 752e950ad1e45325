"""Price drop and back in stock through the real Kafka, on the Flink local runner and on Beam:
catalog changes produced into the catalog-changes topic (as `personalize catalog changes` does)
reach the product stage, and payloads come out on the payloads topic."""

from __future__ import annotations

import argparse

import pytest

from runners.catalog_traffic import change_record
from tests.builders import HOUR, MINUTE, T0, add, profile, purchase, view
from tests.pipelines.test_flink_pipeline import consume, kafka_settings, produce
from transforms.catalog_changes import CatalogChange
from transforms.codec import decode_payload
from transforms.settings import DAY, Settings

pytestmark = pytest.mark.integration

CHANGE_AT = T0 + 2 * DAY


def scenario(s: Settings) -> tuple[int, int, dict[str, str]]:
    """Produce the journeys and the changes; (event and profile records, change records,
    customers by role)."""
    from pipelines.connections import open_producer
    from runners.services import ensure_topics

    tag = s.kafka.group_id
    who = {n: f"{tag}-{n}" for n in ("fan", "buyer", "stock", "carter")}
    items = [profile(T0 - HOUR, cid=c, email=f"{c}@example.com") for c in who.values()]
    items += [view(T0, "p1", cid=who["fan"]), view(T0 + MINUTE, "p1", cid=who["buyer"]),
              purchase(T0 + 2 * MINUTE, "p1", cid=who["buyer"]),
              add(T0 + 3 * MINUTE, "p2", cid=who["stock"]),
              purchase(T0 + 4 * MINUTE, "p2", cid=who["stock"]),
              add(T0 + 5 * MINUTE, "p2", cid=who["carter"])]
    changes = [
        # The known state, stated after the events (an earlier change arriving after them on
        # its own topic would be late at the product stage, which has passed their time).
        CatalogChange(f"{tag}-1", "p1", T0 + 10 * MINUTE, 100.0, True, "shoes"),
        CatalogChange(f"{tag}-2", "p2", T0 + 10 * MINUTE, 30.0, False, "shoes"),
        CatalogChange(f"{tag}-3", "p1", CHANGE_AT, 79.0, None, "shoes"),          # a drop
        CatalogChange(f"{tag}-4", "p2", CHANGE_AT + HOUR, None, True, "shoes"),   # a restock
        CatalogChange(f"{tag}-3", "p1", CHANGE_AT, 79.0, None, "shoes"),          # redelivered
    ]
    n = produce(s, items)
    k = s.kafka
    ensure_topics(k, [k.catalog_changes_topic], 2)
    producer = open_producer(k)
    for change in changes:
        _, key, value = change_record(change)
        producer.send(k.catalog_changes_topic, key=key.encode(), value=value)
    producer.send(k.catalog_changes_topic, key=b"p9", value=b"\x02\x03garbage")
    producer.flush()
    producer.close()
    return n, len(changes) + 1, who


def check(s: Settings, who: dict[str, str]) -> None:
    """The buyers bought after their interest: only the fan hears of the drop, only the
    carter of the restock; the garbage change is a dead letter."""
    k = s.kafka
    payloads = [decode_payload(r.value) for r in consume(s, k.payloads_topic)]
    drops = sorted((p.customer_id, p.trigger.type, p.trigger.fired_at) for p in payloads
                   if p.trigger.type in ("price_drop", "back_in_stock"))
    assert drops == [(who["carter"], "back_in_stock", CHANGE_AT + HOUR),
                     (who["fan"], "price_drop", CHANGE_AT)]
    (drop,) = [p for p in payloads if p.trigger.type == "price_drop"]
    assert "$79.00" in drop.text and "(was $100.00)" in drop.text
    dead = consume(s, k.dead_letters_topic, idle_ms=1000)
    assert any(b"decode_error" in r.value and k.catalog_changes_topic.encode() in r.value
               for r in dead)


@pytest.mark.engine
def test_catalog_changes_from_kafka_fire_price_drop_and_back_in_stock_on_flink(kafka):
    from pipelines.flink_pipeline import run_kafka
    from runners.services import kafka_connector_jar

    s = kafka_settings(kafka)
    n, changes, who = scenario(s)
    options = argparse.Namespace(runner="flink", max_events=n + changes, until_idle=None,
                                 from_beginning=True, savepoint=None, detached=False)
    assert run_kafka(s, [kafka_connector_jar(s)], options) == 0
    check(s, who)


def test_catalog_changes_from_kafka_fire_price_drop_and_back_in_stock_on_beam(kafka):
    from pipelines.beam_kafka import ReadOptions, run_kafka_job
    from runners.services import ensure_topics

    s = kafka_settings(kafka)
    n, changes, who = scenario(s)
    summary = run_kafka_job(s, ReadOptions(max_events=n + changes, from_beginning=True),
                            create_topics=ensure_topics)
    assert summary["read"] == n + changes
    check(s, who)


def check_off(s: Settings) -> None:
    """core.catalog_signals false: the job ran without the changes topic. No signal payload,
    nothing of the topic dead-lettered, and its changes left unconsumed for the group."""
    from kafka import KafkaConsumer, TopicPartition

    k = s.kafka
    payloads = [decode_payload(r.value) for r in consume(s, k.payloads_topic)]
    assert payloads
    assert not [p for p in payloads if p.trigger.type in ("price_drop", "back_in_stock")]
    dead = consume(s, k.dead_letters_topic, idle_ms=1000)
    assert not [r for r in dead if k.catalog_changes_topic.encode() in r.value]
    consumer = KafkaConsumer(bootstrap_servers=k.bootstrap, group_id=k.group_id,
                             enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(k.catalog_changes_topic)
        assert parts
        assert all(consumer.committed(TopicPartition(k.catalog_changes_topic, p)) is None
                   for p in parts)
    finally:
        consumer.close()


@pytest.mark.engine
def test_catalog_signals_off_the_flink_job_leaves_the_changes_topic_alone(kafka):
    from pipelines.flink_pipeline import run_kafka
    from runners.services import kafka_connector_jar

    s = kafka_settings(kafka, **{"core.catalog_signals": "false"})
    n, _, _ = scenario(s)
    options = argparse.Namespace(runner="flink", max_events=n, until_idle=None,
                                 from_beginning=True, savepoint=None, detached=False)
    assert run_kafka(s, [kafka_connector_jar(s)], options) == 0
    check_off(s)


def test_catalog_signals_off_the_beam_job_leaves_the_changes_topic_alone(kafka):
    from pipelines.beam_kafka import ReadOptions, run_kafka_job
    from runners.services import ensure_topics

    s = kafka_settings(kafka, **{"core.catalog_signals": "false"})
    n, _, _ = scenario(s)
    summary = run_kafka_job(s, ReadOptions(max_events=n, from_beginning=True),
                            create_topics=ensure_topics)
    assert summary["read"] == n
    check_off(s)
