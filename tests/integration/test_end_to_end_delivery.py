"""Events into Kafka -> the Beam topology (DirectRunner, Redis catalog and feature store) ->
output topic -> `personalize deliver` -> a real SMTP server, with a duplicate payload injected.

All events lie within max_out_of_orderness of each other, so the watermark passes none of
them before the end of the read: the topology then processes them in event-time order and
fires every deadline at its own time, whatever the arrival order across the two topics.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.beam_kafka import ReadOptions
from pipelines.common import build_core
from pipelines.feature_store import LAST_TRIGGER, FeatureStoreWriter, RedisFeatureStore
from pipelines.redis_catalog import load_catalog, open_catalog
from pipelines.wire import EVENTS, PROFILES
from runners.kafka_io import consume, topic_sizes
from runners.services import ensure_topics
from tests.builders import HOUR, MINUTE, SECOND, T0, add, consent, erasure, profile, view
from tests.conftest import unique_name
from tests.integration.test_deliver import deliver, smtp  # noqa: F401 (fixture)
from transforms.catalog import CatalogItem
from transforms.codec import decode_payload, encode_event, encode_profile
from transforms.model import BehaviourEvent, ConsentState, Item

pytestmark = pytest.mark.integration

PHONES = "electronics.smartphone"
CATALOG = [
    CatalogItem("p1", "Trail Runner 2", "shoes", "acme", 89.0, "https://shop.example.invalid/p/p1"),
    *(CatalogItem(f"ph{i}", f"Phone {i}", PHONES, "acme", 199.0 + i) for i in range(5)),
]


def journeys() -> list:
    """A: abandons a cart. B: views five phones. C: puts something in a cart, then is erased."""
    a, b, c = "e2e-a", "e2e-b", "e2e-c"
    items = [profile(T0 - HOUR, cid=cid, email=f"{cid}@example.com") for cid in (a, b, c)]
    items += [view(T0, "p1", cid=a), add(T0 + SECOND, "p1", cid=a)]
    items += [view(T0 + i * SECOND, f"ph{i}", PHONES, cid=b) for i in range(5)]
    items += [add(T0 + 2 * SECOND, "p1", cid=c), erasure(T0 + 8 * SECOND, cid=c)]
    return items



def job_topics(new_topic, service_settings, prefix: str) -> tuple[dict[str, str], Any]:
    """This test's own topics (events, profiles, payloads, audit, dead) and the job's settings
    writing to them and to Redis keys under `prefix`."""
    topics = {name: new_topic(name) for name in ("events", "profiles", "payloads", "audit", "dead")}
    settings = service_settings.with_overrides(
        [
            f"kafka.payloads_topic={topics['payloads']}",
            f"kafka.audit_topic={topics['audit']}",
            f"kafka.dead_letters_topic={topics['dead']}",
            f"kafka.group_id={unique_name('job')}",
            "kafka.partitions=1",
            f"redis.key_prefix={prefix}",
        ]
    )
    return topics, settings


def test_events_to_delivered_emails(
    kafka,
    new_topic,
    service_settings,
    redis_client,
    prefix,
    smtp,  # noqa: F811 (the fixture imported above)
    capsys,
):
    inbox, port = smtp
    topics, settings = job_topics(new_topic, service_settings, prefix)
    load_catalog(redis_client, CATALOG, prefix)

    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    for item in journeys():
        is_event = isinstance(item, BehaviourEvent)
        producer.send(
            topics["events" if is_event else "profiles"],
            key=item.customer_id.encode(),
            value=encode_event(item) if is_event else encode_profile(item),
        )
    producer.flush()
    producer.close()

    from pipelines.beam_kafka import run_kafka_job

    store = RedisFeatureStore.from_settings(settings)
    writer = FeatureStoreWriter(store)
    summary = run_kafka_job(
        settings,
        ReadOptions(until_idle=3.0, from_beginning=True),
        feature_writer=writer,
        topics={EVENTS: topics["events"], PROFILES: topics["profiles"]},
        core=build_core(settings, catalog=open_catalog(settings)),
        create_topics=ensure_topics,
    )
    writer.close()
    assert summary["read"] == len(journeys()), summary
    assert summary["payloads"] == 2 and summary["dead_letters"] == 0, summary

    # The job's output, decoded: rendered from the Redis catalog, not the fallback.
    records = consume(kafka, topics["payloads"], 2)
    payloads = {decode_payload(r.value).customer_id: decode_payload(r.value) for r in records}
    assert sorted(payloads) == ["e2e-a", "e2e-b"]
    assert "Trail Runner 2" in payloads["e2e-a"].html and not payloads["e2e-a"].fallback

    # The feature store: A's features with its last trigger; C erased, nothing of theirs left.
    assert store.read("e2e-a")[LAST_TRIGGER] == "cart_abandonment"
    assert store.read("e2e-b")[LAST_TRIGGER] == "browse_intensity"
    assert store.read_consent("e2e-a") == ConsentState("e2e-a", True, T0 - HOUR)  # its profile
    c_keys = [k.decode() for k in redis_client.scan_iter(match=f"{prefix}*e2e-c*")]
    assert c_keys == [f"{prefix}erased:e2e-c"]

    # A redelivery upstream: the first payload record again, byte for byte.
    dup = records[0]
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    producer.send(topics["payloads"], key=dup.key, value=dup.value, headers=dup.headers)
    producer.flush()
    producer.close()
    assert topic_sizes(kafka, [topics["payloads"]])[topics["payloads"]] == 3

    result = deliver(
        capsys,
        topic=topics["payloads"],
        group=unique_name("deliver"),
        prefix=prefix,
        port=port,
        now_ms=T0 + 2 * HOUR,
    )
    assert (result["read"], result["delivered"], result["duplicate"]) == (3, 2, 1)
    assert sorted(rcpt for _, [rcpt], _ in inbox.received) == [
        "e2e-a@example.com",
        "e2e-b@example.com",
    ]
    for p in payloads.values():
        [msg] = inbox.by_message_id(p.message_id)
        assert msg["Subject"] == p.subject
        assert msg.get_content_type() == "multipart/alternative"


def test_a_payload_held_for_quiet_hours_is_not_sent_after_an_unsubscribe(
    kafka,
    new_topic,
    service_settings,
    redis_client,
    prefix,
    smtp,  # noqa: F811 (the fixture imported above)
    capsys,
):
    """D abandons a cart at 02:00 in Auckland: the payload waits for 08:00 local (19:00 UTC).
    D unsubscribes at T0 + 90 min, after it was emitted: the job writes the revocation to the
    feature store at once, and deliver drops the held payload (suppressed:no_consent)."""
    inbox, port = smtp
    topics, settings = job_topics(new_topic, service_settings, prefix)
    d = "e2e-d"
    from kafka import KafkaProducer

    from pipelines.beam_kafka import run_kafka_job

    def job(*items: Item) -> dict:
        """Produce the items, run the job over what is new until idle; its summary. (Beam's
        DirectRunner keeps no state from one run to the next.)"""
        producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
        for item in items:
            if isinstance(item, BehaviourEvent):
                producer.send(topics["events"], key=d.encode(), value=encode_event(item))
            else:
                producer.send(topics["profiles"], key=d.encode(), value=encode_profile(item))
        producer.flush()
        producer.close()
        writer = FeatureStoreWriter(RedisFeatureStore.from_settings(settings))
        summary = run_kafka_job(
            settings,
            ReadOptions(until_idle=3.0, from_beginning=True),
            feature_writer=writer,
            topics={EVENTS: topics["events"], PROFILES: topics["profiles"]},
            create_topics=ensure_topics,
        )
        writer.close()
        return summary

    crm = profile(T0 - HOUR, cid=d, email=f"{d}@example.com", tz="Pacific/Auckland")
    assert job(crm, add(T0 + SECOND, "p1", cid=d))["payloads"] == 1
    [record] = consume(kafka, topics["payloads"], 1)
    assert decode_payload(record.value).send_after == T0 + 7 * HOUR  # 08:00 in Auckland

    run = dict(topic=topics["payloads"], group=unique_name("deliver"), prefix=prefix, port=port)
    assert deliver(capsys, now_ms=T0 + 2 * HOUR, **run)["deferred"] == 1
    job(consent(T0 + 90 * MINUTE, False, cid=d))  # after the payload was emitted
    later = deliver(capsys, now_ms=T0 + 8 * HOUR, **run)
    assert (later["suppressed:no_consent"], later["delivered"]) == (1, 0)
    assert inbox.received == []
