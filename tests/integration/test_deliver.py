"""`personalize deliver` against the real Kafka and Redis, into a real SMTP server on loopback.

The SMTP server is aiosmtpd's Controller on 127.0.0.1 (a free port); each test has its own
topic, consumer group and Redis key prefix. Time is data: --now-ms is fixed per run.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from pipelines.feature_store import FeatureStoreWriter, RedisFeatureStore
from pipelines.wire import payload_record, route
from runners.cli import main
from runners.deliver.connector import Deliverer, Ledger, OffsetTracker, wall_ms
from runners.deliver.smtp import SmtpSender, Unsendable, build_message
from tests.builders import HOUR, MINUTE, SECOND, T0, consent, erasure, profile
from tests.conftest import unique_name
from transforms.core import Core
from transforms.model import FEATURES, EmailPayload, FiredTrigger
from transforms.settings import DAY, DeliverSettings

ADA = "ada@example.com"


class Inbox:
    """aiosmtpd handler: keeps every message received, parsed."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def message_ids(self) -> list[str]:
        return [m["X-Test-Id"] or m["Message-ID"] for _, _, m in self.received]

    def by_message_id(self, mid: str) -> list[EmailMessage]:
        return [m for _, _, m in self.received if m["Message-ID"].startswith(f"<{mid}@")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1: (inbox, port)."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def make_payload(
    mid: str | None = None,
    cid: str = "c1",
    send_after: int | None = None,
    expires_at: int = T0 + DAY,
) -> EmailPayload:
    return EmailPayload(
        message_id=mid or uuid.uuid4().hex,
        customer_id=cid,
        recipient_email=ADA,
        recipient_name="Ada Lovelace",
        locale="en-GB",
        time_zone="UTC",
        trigger=FiredTrigger("cart_abandonment", "k1", T0, ["p1"]),
        campaign="cart_abandonment.v1",
        variant="a",
        subject="Ada, you left something",
        preheader="Still thinking?",
        html="<!DOCTYPE html><html><body><p>Hi Ada</p></body></html>",
        text="Hi Ada\n",
        fallback=False,
        fallback_reason=None,
        recommendations=[],
        engagement_score=50.0,
        send_after=send_after,
        expires_at=expires_at,
        source_event_ids=["e1"],
    )


def produce(bootstrap: str, topic: str, records: list[EmailPayload | bytes]) -> None:
    """Payloads as the job writes them (key, Avro value, message_id header); bytes as is."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for r in records:
            if isinstance(r, bytes):
                producer.send(topic, key=b"c1", value=r)
            else:
                key, value, headers = payload_record(r)
                producer.send(topic, key=key, value=value, headers=headers)
        producer.flush()
    finally:
        producer.close()


def deliver(
    capsys,
    *,
    topic: str,
    group: str,
    prefix: str,
    port: int,
    now_ms: int | None,
    audit: Path | None = None,
    idle: float = 3.0,
    extra: tuple[str, ...] = (),
) -> dict:
    """Run `personalize deliver` in this process; its JSON summary."""
    capsys.readouterr()
    args = [
        "deliver",
        "--until-idle",
        str(idle),
        "--set",
        f"kafka.payloads_topic={topic}",
        "--set",
        f"deliver.group_id={group}",
        "--set",
        f"redis.key_prefix={prefix}",
        "--set",
        "deliver.smtp_host=127.0.0.1",
        "--set",
        f"deliver.smtp_port={port}",
        "--set",
        "deliver.sender=Shop <shop@example.org>",
        *extra,
    ]
    if now_ms is not None:
        args += ["--now-ms", str(now_ms)]
    if audit is not None:
        args += ["--audit", str(audit)]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def committed(bootstrap: str, topic: str, group: str) -> int | None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close(autocommit=False)


@pytest.mark.integration
def test_duplicates_expired_deferred_erased_and_garbage(
    kafka, new_topic, smtp, prefix, redis_client, capsys, tmp_path
):
    inbox, port = smtp
    topic, group = new_topic("payloads"), unique_name("deliver")
    a = make_payload()
    expired = make_payload(expires_at=T0 - 1)
    later = make_payload(send_after=T0 + HOUR)
    d = make_payload()
    gone = make_payload(cid="gone")
    redis_client.set(f"{prefix}erased:gone", b"1", px=DAY)  # an erased customer
    # offsets:      0  1  2        3           4      5  6     7
    produce(kafka, topic, [a, a, expired, b"\x00garbage", later, d, gone, a])
    audit = tmp_path / "audit.jsonl"
    run = dict(topic=topic, group=group, prefix=prefix, port=port, audit=audit)

    first = deliver(capsys, now_ms=T0, **run)
    assert {
        k: first[k]
        for k in ("read", "delivered", "duplicate", "expired", "erased", "invalid", "deferred")
    } == {
        "read": 8,
        "delivered": 2,
        "duplicate": 2,
        "expired": 1,
        "erased": 1,
        "invalid": 1,
        "deferred": 1,
    }
    assert len(inbox.by_message_id(a.message_id)) == 1
    assert len(inbox.by_message_id(d.message_id)) == 1
    assert not inbox.by_message_id(later.message_id)
    assert committed(kafka, topic, group) == 4  # held at the deferred message

    second = deliver(capsys, now_ms=T0 + 2 * HOUR, **run)
    assert (second["read"], second["delivered"], second["duplicate"]) == (4, 1, 2)
    assert second["erased"] == 1 and second["deferred"] == 0
    assert len(inbox.by_message_id(later.message_id)) == 1
    assert len(inbox.received) == 3  # a once, d once, later once
    assert committed(kafka, topic, group) == 8

    third = deliver(capsys, now_ms=T0 + 2 * HOUR, **run)
    assert third["read"] == 0

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {
        "decision": "expired",
        "message_id": expired.message_id,
        "customer_id": "c1",
    }.items() <= next(line for line in lines if line["decision"] == "expired").items()
    assert {line["decision"] for line in lines} == {
        "delivered",
        "duplicate",
        "expired",
        "erased",
        "invalid",
    }
    text = audit.read_text()
    assert ADA not in text and "Ada" not in text  # no personal data in the audit


@pytest.mark.integration
def test_the_email_is_multipart_with_unsubscribe_headers(kafka, new_topic, smtp, prefix, capsys):
    inbox, port = smtp
    topic = new_topic("payloads")
    p = make_payload(expires_at=wall_ms() + DAY)
    produce(kafka, topic, [p])
    summary = deliver(
        capsys,
        topic=topic,
        group=unique_name("deliver"),
        prefix=prefix,
        port=port,
        now_ms=None,  # the wall clock
        idle=60.0,
        extra=("--max-messages", "1"),
    )  # ends after one, not idle
    assert (summary["read"], summary["delivered"]) == (1, 1)
    [(mail_from, rcpt, msg)] = inbox.received
    assert (mail_from, rcpt) == ("shop@example.org", [ADA])
    assert msg.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in msg.iter_parts()}
    assert parts["text/plain"].strip() == "Hi Ada"
    assert "<p>Hi Ada</p>" in parts["text/html"]
    assert msg["Subject"] == p.subject
    assert msg["To"] == f"Ada Lovelace <{ADA}>"
    assert msg["Message-ID"] == f"<{p.message_id}@personalize.example.invalid>"
    assert msg["List-Unsubscribe"] == (
        f"<https://shop.example.invalid/unsubscribe?c=c1&m={p.message_id}>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.integration
def test_an_unreachable_server_leaves_the_message_for_a_later_run(
    kafka, new_topic, smtp, prefix, capsys
):
    inbox, port = smtp
    topic, group = new_topic("payloads"), unique_name("deliver")
    p = make_payload()
    produce(kafka, topic, [p])
    run = dict(topic=topic, group=group, prefix=prefix, now_ms=T0)
    down = deliver(capsys, port=free_port(), **run)  # nothing listens there
    assert (down["delivered"], down["retrying"]) == (0, 1)
    assert committed(kafka, topic, group) in (None, 0)
    up = deliver(capsys, port=port, **run)
    assert (up["read"], up["delivered"]) == (1, 1)
    assert len(inbox.by_message_id(p.message_id)) == 1


# -- pure helpers (no services) -----------------------------------------------------------------


def test_header_injection_is_unsendable():
    cfg = DeliverSettings()
    with pytest.raises(Unsendable):
        build_message(make_payload(mid="x\r\nBcc: evil@example.com"), cfg, T0)
    bad = make_payload()
    bad.recipient_email = "ada@example.com\r\nBcc: evil@example.com"
    with pytest.raises(Unsendable):
        build_message(bad, cfg, T0)


def test_commit_position_is_the_lowest_unhandled_offset():
    t = OffsetTracker()
    for offset in (5, 6, 7):
        t.read("tp", offset)
    t.handled("tp", 5)
    t.handled("tp", 7)
    assert t.committable() == {"tp": 6}
    t.mark_committed({"tp": 6})
    assert t.committable() == {}
    t.handled("tp", 6)
    assert t.committable() == {"tp": 8}


def test_long_list_unsubscribe_url_stays_a_plain_header_on_the_wire():
    # A URL has no space to fold at: it must go out as is, not RFC 2047-encoded (which mail
    # clients cannot use as a link).
    p = make_payload(mid="m" * 40)
    raw = build_message(p, DeliverSettings(), T0).as_bytes()
    line = next(h for h in raw.split(b"\r\n") if h.startswith(b"List-Unsubscribe:"))
    assert line.startswith(b"List-Unsubscribe: <https://") and b"=?utf-8?" not in line


# -- consent and erasure are re-checked at send time (DESIGN.md section 8) ----------------------


def job_writes(prefix: str, items: list, watermark: int) -> None:
    """What the job writes to the feature store for `items`: the core's outputs routed as the
    engines route them (pipelines.wire.route) into the Redis feature store writer."""
    core = Core()
    writer = FeatureStoreWriter(
        RedisFeatureStore(key_prefix=prefix, feature_ttl_ms=DAY, tombstone_ttl_ms=DAY)
    )
    state = None
    outputs = []
    for item in items:
        state, out, _ = core.step(state, item, watermark)
        outputs += out
    routed, _ = route(outputs, lambda request: request)
    for sink, record in routed:
        if sink == FEATURES:
            writer.write(record)  # a consent change is durable when write() returns
    writer.store.close()


@pytest.mark.integration
def test_a_payload_held_for_quiet_hours_is_dropped_if_the_customer_unsubscribed(
    kafka, new_topic, smtp, prefix, capsys, tmp_path
):
    inbox, port = smtp
    topic, group = new_topic("payloads"), unique_name("deliver")
    quiet = make_payload(cid="quiet", send_after=T0 + HOUR)  # fired at T0, held till T0 + 1 h
    stays = make_payload(cid="stays", send_after=T0 + HOUR)
    gone = make_payload(cid="gone")  # due at once, but its customer revoked before the read
    job_writes(prefix, [profile(T0 - HOUR, cid="stays")], T0)
    job_writes(
        prefix, [profile(T0 - HOUR, cid="gone"), consent(T0 - MINUTE, False, cid="gone")], T0
    )
    produce(kafka, topic, [quiet, stays, gone])
    audit = tmp_path / "audit.jsonl"
    run = dict(topic=topic, group=group, prefix=prefix, port=port, audit=audit)

    first = deliver(capsys, now_ms=T0, **run)
    assert (first["deferred"], first["suppressed:no_consent"], first["delivered"]) == (2, 1, 0)
    # The unsubscribe arrives 15 s out of order, after the payload was emitted: never late.
    job_writes(
        prefix,
        [profile(T0 - HOUR, cid="quiet"), consent(T0 + 10 * MINUTE, False, cid="quiet")],
        T0 + 10 * MINUTE + 15 * SECOND,
    )
    second = deliver(capsys, now_ms=T0 + 2 * HOUR, **run)
    # Read again from the commit point (held at quiet's offset): gone is dropped again.
    assert (second["read"], second["suppressed:no_consent"], second["delivered"]) == (3, 2, 1)
    assert [m["Message-ID"] for _, _, m in inbox.received] == [
        f"<{stays.message_id}@personalize.example.invalid>"
    ]
    assert committed(kafka, topic, group) == 3
    dropped = [
        line["message_id"]
        for line in map(json.loads, audit.read_text().splitlines())
        if line["decision"] == "suppressed:no_consent"
    ]
    assert sorted(dropped) == sorted([gone.message_id, gone.message_id, quiet.message_id])


@pytest.mark.integration
def test_a_held_payload_is_rechecked_for_consent_and_erasure_when_it_falls_due(
    kafka, new_topic, smtp, prefix, redis_client
):
    """One connector run: the payloads are held in memory, then the customer unsubscribes
    (or is erased) before their send_after comes."""
    from kafka import KafkaConsumer

    inbox, port = smtp
    topic = new_topic("payloads")
    unsubscribes = make_payload(cid="u1", send_after=T0 + HOUR)
    erased = make_payload(cid="e1", send_after=T0 + HOUR)
    produce(kafka, topic, [unsubscribes, erased])
    cfg = DeliverSettings(smtp_host="127.0.0.1", smtp_port=port, group_id=unique_name("deliver"))
    now = [T0]
    consumer = KafkaConsumer(
        bootstrap_servers=kafka,
        group_id=cfg.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    deliverer = Deliverer(
        consumer,
        SmtpSender(cfg),
        Ledger(redis_client, prefix, cfg),
        cfg,
        clock=lambda: now[0],
    )
    try:
        deliverer.subscribe(topic)
        assert deliverer.run(max_messages=2)["deferred"] == 2
        job_writes(
            prefix,
            [profile(T0 - HOUR, cid="u1"), consent(T0 + MINUTE, False, cid="u1")],
            T0 + MINUTE,
        )
        job_writes(
            prefix, [profile(T0 - HOUR, cid="e1"), erasure(T0 + MINUTE, cid="e1")], T0 + MINUTE
        )
        now[0] = T0 + 2 * HOUR
        deliverer.release_due()
        summary = deliverer.summary()
    finally:
        deliverer.close()
    assert (summary["suppressed:no_consent"], summary["erased"], summary["delivered"]) == (1, 1, 0)
    assert inbox.received == []
