"""The Beam topology on the real local Kafka: Avro events in, payloads out, read back, decoded."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable

import pytest

from pipelines import reference
from pipelines.beam_kafka import ReadOptions, run_kafka_job
from pipelines.connections import open_producer
from pipelines.wire import EVENTS, MESSAGE_ID_HEADER, PROFILES
from runners import SHIPPED_DATA as DATA
from runners.kafka_io import consume, topic_sizes
from runners.services import ensure_topics
from tests.conftest import unique_name
from transforms.codec import decode_dead_letter, decode_payload, encode_event, encode_profile
from transforms.model import R_DECODE, BehaviourEvent, CustomerProfile, Product
from transforms.readers import read_rees46
from transforms.settings import SECOND, Settings

pytestmark = pytest.mark.integration

ITEMS = 2000      # 1380 events and 620 profiles, 00:00-02:18 UTC: both triggers fire


def job_settings(kafka: str, new_topic: Callable[..., str], **core: str) -> tuple[Settings, dict]:
    """Settings on fresh topics (events in 2 partitions), and the input topics by tag."""
    topics = {EVENTS: new_topic("beam-events", partitions=2), PROFILES: new_topic("beam-profiles")}
    settings = Settings().with_overrides([
        f"kafka.bootstrap={kafka}",
        f"kafka.events_topic={topics[EVENTS]}",
        f"kafka.profiles_topic={topics[PROFILES]}",
        f"kafka.payloads_topic={new_topic('beam-payloads')}",
        f"kafka.audit_topic={new_topic('beam-audit')}",
        f"kafka.dead_letters_topic={new_topic('beam-dead')}",
        f"kafka.catalog_changes_topic={unique_name('beam-changes')}",  # none: not read
        f"kafka.group_id={unique_name('beam-it')}",
        *(f"core.{k}={v}" for k, v in core.items()),
    ])
    return settings, topics


def produce(kafka: str, topics: dict, items: list, garbage: bytes | None = None) -> int:
    producer = open_producer(kafka)
    n = 0
    for item in items:
        if isinstance(item, BehaviourEvent):
            producer.send(topics[EVENTS], key=item.customer_id.encode(), value=encode_event(item))
        elif isinstance(item, CustomerProfile):
            producer.send(topics[PROFILES], key=item.customer_id.encode(),
                          value=encode_profile(item))
        else:
            continue
        n += 1
    if garbage is not None:
        producer.send(topics[EVENTS], key=b"nobody", value=garbage)
        n += 1
    producer.flush()
    producer.close()
    return n


def committed(kafka: str, group: str) -> dict[tuple[str, int], int]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka, client_id="beam-it")
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def test_bounded_run_reads_avro_and_writes_the_reference_payloads(kafka, new_topic, tmp_path):
    if not DATA.is_file():
        pytest.fail(f"shipped data missing: {DATA} (the repo expects ../shared/data beside it)")
    settings, topics = job_settings(kafka, new_topic)
    items = list(itertools.islice(read_rees46(DATA), ITEMS))
    n = produce(kafka, topics, items, garbage=b"\x02not avro")

    summary = run_kafka_job(settings, ReadOptions(max_events=n, from_beginning=True),
                            create_topics=ensure_topics)

    expected = reference.run_replay(items, Settings(), tmp_path / "reference")
    assert summary["read"] == n
    assert summary["payloads"] == expected["payloads"] > 0
    k = settings.kafka
    sizes = topic_sizes(kafka, [k.payloads_topic, k.audit_topic, k.dead_letters_topic])
    assert sizes == {k.payloads_topic: expected["payloads"], k.audit_topic: summary["audit"],
                     k.dead_letters_topic: 1}
    records = consume(kafka, k.payloads_topic, expected["payloads"], timeout_s=20)
    payloads = [decode_payload(r.value) for r in records]
    assert len(payloads) == expected["payloads"]
    for record, payload in zip(records, payloads, strict=True):
        assert record.key == payload.customer_id.encode()
        assert dict(record.headers) == {MESSAGE_ID_HEADER: payload.message_id.encode()}
    # Exactly the reference runner's payloads: same ids, same triggers.
    reference_ids = {json.loads(line)["message_id"]
                     for line in (tmp_path / "reference" / "payloads.jsonl").open()}
    assert {p.message_id for p in payloads} == reference_ids
    assert {p.trigger.type for p in payloads} == {
        json.loads(line)["trigger"]["type"]
        for line in (tmp_path / "reference" / "payloads.jsonl").open()
    }

    (dead,) = [decode_dead_letter(r.value) for r in consume(kafka, k.dead_letters_topic, 1)]
    assert (dead.reason, dead.raw, dead.origin.topic) == (R_DECODE, b"\x02not avro", topics[EVENTS])
    assert summary["audit"] == sum(expected["decisions"].values())

    # Offsets were committed: everything read, so a second run from the group reads nothing.
    offsets = committed(kafka, settings.kafka.group_id)
    assert sum(offsets.values()) == n
    again = run_kafka_job(settings, ReadOptions(until_idle=3.0), create_topics=ensure_topics)
    assert again["read"] == 0


def test_unbounded_run_fires_a_deadline_while_the_input_is_idle(kafka, new_topic):
    # Live event times: the watermark follows the wall clock once the input is idle, so the
    # deadline fires about when it is due, with no later event to push the watermark.
    settings, topics = job_settings(kafka, new_topic, cart_delay="3s", max_out_of_orderness="1s")
    stop = threading.Event()
    read = ReadOptions(from_beginning=True, stop=stop)     # fresh topics: no race with the join
    result: list[dict] = []
    job = threading.Thread(target=lambda: result.append(
        run_kafka_job(settings, read, create_topics=ensure_topics)))
    job.start()
    try:
        now = int(time.time() * 1000)
        profile = CustomerProfile("live-1", now - 10 * SECOND, email="live@example.com",
                                  consents={"email": True}, time_zone="UTC")
        cart = BehaviourEvent("live-add-1", "live-1", "add_to_cart", now, session_id="s",
                              product=Product("p1", "shoes", "acme", 50.0), quantity=1)
        produce(kafka, topics, [profile, cart])
        deadline = now + 3 * SECOND
        (record,) = consume(kafka, settings.kafka.payloads_topic, 1, timeout_s=30)
        arrived = int(time.time() * 1000)
    finally:
        stop.set()
        job.join(60)
    payload = decode_payload(record.value)
    assert (payload.customer_id, payload.trigger.type, payload.trigger.fired_at) == (
        "live-1", "cart_abandonment", deadline)
    # On the topic within idleness (2 s) + out-of-orderness (1 s) + polling of the deadline.
    assert arrived - deadline < 10 * SECOND
    assert result and result[0]["payloads"] == 1
