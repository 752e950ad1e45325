"""Sizes and sink errors on the Beam topology over the real local Kafka (DESIGN.md section 8):
outputs fit the topics' max.message.bytes, and a sink error commits no input offset past an
unwritten output and writes nothing twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from pipelines.beam_kafka import ReadOptions, run_kafka_job
from pipelines.connections import open_producer
from pipelines.wire import EVENTS, PROFILES
from runners import services
from runners.kafka_io import consume, topic_sizes
from runners.services import ensure_topics
from tests.builders import CART_DELAY, T0, add, profile
from tests.conftest import unique_name
from tests.integration.test_beam_kafka import committed
from transforms.codec import decode_dead_letter, decode_payload, encode_event, encode_profile
from transforms.model import R_DECODE, R_EMPTY
from transforms.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def limited_topic(kafka: str) -> Iterator[Callable[[str, int], str]]:
    """Factory: a fresh topic whose max.message.bytes is `limit` (deleted after the test)."""
    from kafka.admin import KafkaAdminClient

    created: list[str] = []

    def make(prefix: str, limit: int) -> str:
        name = unique_name(prefix)
        services.ensure_topics(kafka, [name], 1, configs={"max.message.bytes": str(limit)})
        created.append(name)
        return name

    yield make
    admin = KafkaAdminClient(bootstrap_servers=kafka, client_id="tests-cleanup")
    try:
        admin.delete_topics(created, raise_errors=False)
    finally:
        admin.close()


def settings_for(kafka: str, topics: dict[str, str], **core: object) -> Settings:
    return Settings().with_overrides([
        f"kafka.bootstrap={kafka}",
        f"kafka.events_topic={topics[EVENTS]}",
        f"kafka.profiles_topic={topics[PROFILES]}",
        f"kafka.payloads_topic={topics['payloads']}",
        f"kafka.audit_topic={topics['audit']}",
        f"kafka.dead_letters_topic={topics['dead']}",
        f"kafka.group_id={unique_name('beam-sizes')}",
        *(f"core.{k}={v}" for k, v in core.items()),
    ])


def send(kafka: str, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = open_producer(kafka)
    for topic, key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def test_hostile_sizes_fit_small_topics_and_the_job_runs_on(kafka, limited_topic):
    # Output topics take 100 000 bytes; the job's limit is 90 000. Inputs: a 600-item cart of
    # 2 000-character product ids (unbounded, a payload of megabytes), a name of 2 000
    # characters with CR/LF, a 1.5 MB record that is not Avro, a tombstone.
    topics = {EVENTS: limited_topic("sz-events", 4_000_000),
              PROFILES: limited_topic("sz-profiles", 1_000_000),
              "payloads": limited_topic("sz-payloads", 100_000),
              "audit": limited_topic("sz-audit", 100_000),
              "dead": limited_topic("sz-dead", 100_000)}
    settings = settings_for(kafka, topics, max_output_bytes=90_000)
    cart = [add(T0 + i, pid=f"{i:04d}" + "p" * 1996) for i in range(600)]
    crm = profile(T0 - 1, name="Ada\r\nBcc: x" + "n" * 2000)
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (topics[PROFILES], b"c1", encode_profile(crm))
    ]
    records += [(topics[EVENTS], b"c1", encode_event(ev)) for ev in cart]
    records += [(topics[EVENTS], b"junk", b"\x02" + b"\xff" * 1_500_000),
                (topics[EVENTS], b"gone", None),
                (topics[EVENTS], b"c2", encode_event(add(T0 + 10 * CART_DELAY, cid="c2")))]
    send(kafka, records)

    summary = run_kafka_job(settings, ReadOptions(max_events=len(records), from_beginning=True),
                            create_topics=ensure_topics)

    assert summary["read"] == len(records)
    (record,) = consume(kafka, topics["payloads"], 1, timeout_s=20)
    assert len(record.value) <= 90_000
    payload = decode_payload(record.value)
    assert payload.customer_id == "c1" and payload.fallback
    assert payload.recipient_name is not None and "\n" not in payload.recipient_name
    assert len(payload.recipient_name) <= settings.core.max_name_length
    dead = [decode_dead_letter(r.value) for r in consume(kafka, topics["dead"], 2, timeout_s=20)]
    assert sorted(d.reason for d in dead) == [R_DECODE, R_EMPTY]
    big = next(d for d in dead if d.reason == R_DECODE)
    assert big.raw_length == 1_500_001 and len(big.raw) == settings.core.max_dead_letter_raw
    assert sum(committed(kafka, settings.kafka.group_id).values()) == len(records)


def test_a_sink_error_commits_no_offset_past_an_unwritten_output_and_writes_nothing_twice(
    kafka, limited_topic
):
    # The dead-letter topic takes 3 000 bytes: the dead letter of a 20 000-byte record cannot be
    # written (a broker misconfigured below core.max_output_bytes). A small dead letter rides in
    # the same bundle, and valid events follow.
    topics = {EVENTS: limited_topic("se-events", 1_000_000),
              PROFILES: limited_topic("se-profiles", 1_000_000),
              "payloads": limited_topic("se-payloads", 1_000_000),
              "audit": limited_topic("se-audit", 1_000_000),
              "dead": limited_topic("se-dead", 3_000)}
    settings = settings_for(kafka, topics)
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (topics[PROFILES], b"c1", encode_profile(profile(T0 - 1))),
        (topics[EVENTS], b"c1", encode_event(add(T0))),
        (topics[EVENTS], b"small", b"\x02small junk"),
        (topics[EVENTS], b"big", b"\x02" + b"\xff" * 20_000),           # offset 2
        *((topics[EVENTS], b"c1", encode_event(add(T0 + i * CART_DELAY, pid=f"p{i}")))
          for i in range(1, 6)),
    ]
    send(kafka, records)

    with pytest.raises(Exception, match="Kafka sends failed|MessageSizeTooLarge|RecordTooLarge"):
        run_kafka_job(settings, ReadOptions(max_events=len(records), from_beginning=True),
                      create_topics=ensure_topics)

    offsets = committed(kafka, settings.kafka.group_id)
    assert offsets.get((topics[EVENTS], 0), 0) <= 2     # never past the unwritten dead letter
    written = consume(kafka, topics["dead"], 10, timeout_s=5)
    assert Counter(r.key for r in written)[topics[EVENTS].encode()] <= 1
    assert [decode_dead_letter(r.value).raw for r in written] in ([], [b"\x02small junk"])
    sizes = topic_sizes(kafka, [topics["payloads"]])
    payload_ids = Counter(decode_payload(r.value).message_id
                          for r in consume(kafka, topics["payloads"], sizes[topics["payloads"]]))
    assert all(n == 1 for n in payload_ids.values())
