from __future__ import annotations

import dataclasses
import json

import pytest

from tests.builders import T0, add, consent, event, profile, view
from transforms.codec import (
    SCHEMA_ID_OF,
    confluent_frame,
    decode_dead_letter,
    decode_event,
    decode_payload,
    decode_profile,
    encode_dead_letter,
    encode_event,
    encode_payload,
    encode_profile,
    payload_from_record,
    payload_record,
)
from transforms.model import (
    EMAIL_OPEN,
    PURCHASE,
    R_DECODE,
    R_EMPTY,
    R_FUTURE,
    R_INVALID,
    R_MISSING,
    R_OVERSIZED,
    R_SCHEMA,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    EmailPayload,
    FiredTrigger,
    Origin,
    Product,
    Recommendation,
)
from transforms.segments import Segment
from transforms.settings import CoreSettings

CORE = CoreSettings()
ORIGIN = Origin("behaviour-events", 3, 42)
RECEIVED = T0 + 5


def full_event() -> BehaviourEvent:
    return BehaviourEvent(
        event_id="e-full", customer_id="c1", event_type=PURCHASE, occurred_at=T0,
        session_id="s1", product=Product("p1", "shoes", "acme", 49.5), quantity=2,
        order_id="o1", order_total=99.0, email_message_id="m1", email_campaign="weekly",
        consent_channel="email", consent_granted=True, properties={"utm": "mail", "é": "ü"},
    )


def payload() -> EmailPayload:
    return EmailPayload(
        message_id="msg1", customer_id="c1", recipient_email="ada@example.com",
        recipient_name="Ada", locale="en-GB", time_zone="Europe/London",
        trigger=FiredTrigger("cart_abandonment", "k1", T0, ["p1", "p2"], ["e1", "e2"], "shoes"),
        campaign="cart_abandonment", variant="b", subject="Still thinking?", preheader="Your cart",
        html="<p>Hi</p>", text="Hi", fallback=False, fallback_reason=None,
        recommendations=[Recommendation("p3", 0.9, "Shoe", "shoes", "acme", 10.0, "u", None)],
        engagement_score=42.5, send_after=None, expires_at=T0 + 86_400_000,
        source_event_ids=["e1", "e2"],
    )


def decode(raw: bytes, watermark: int | None = None) -> BehaviourEvent | DeadLetter:
    return decode_event(raw, ORIGIN, watermark, CORE, RECEIVED)


@pytest.mark.parametrize("ev", [
    full_event(), view(T0), add(T0, qty=3), consent(T0, False), event(EMAIL_OPEN, T0,
    email_message_id="m1"),
], ids=["full", "view", "add", "consent", "email_open"])
def test_event_round_trip_keeps_every_field_and_attaches_the_origin(ev: BehaviourEvent) -> None:
    decoded = decode(encode_event(ev))
    assert decoded == dataclasses.replace(ev, origin=ORIGIN)


def test_event_in_the_confluent_wire_format_decodes() -> None:
    ev = view(T0)
    framed = confluent_frame(SCHEMA_ID_OF["behaviour_event"], encode_event(ev))
    assert framed[:5] == b"\x00\x00\x00\x00\x01"
    assert decode(framed) == dataclasses.replace(ev, origin=ORIGIN)


@pytest.mark.parametrize("raw, reason, words", [
    (confluent_frame(SCHEMA_ID_OF["customer_profile"], encode_event(view(T0))), R_SCHEMA,
     "customer_profile schema"),
    (confluent_frame(99, encode_event(view(T0))), R_SCHEMA, "not a registered schema"),
    (b"\x00\x00\x01", R_DECODE, "header truncated"),
    (b"", R_EMPTY, "tombstone"),
    (encode_event(view(T0))[:-3], R_DECODE, ""),
    (encode_event(view(T0)) + b"\x02\x04", R_SCHEMA, "bytes after"),
], ids=["profile-id", "unknown-id", "short-header", "empty", "truncated", "trailing"])
def test_undecodable_bytes_become_dead_letters_with_raw_and_origin(
    raw: bytes, reason: str, words: str
) -> None:
    dead = decode(raw)
    assert isinstance(dead, DeadLetter)
    assert (dead.raw, dead.origin, dead.reason, dead.received_at) == (raw, ORIGIN, reason, RECEIVED)
    assert words in dead.error


def test_invalid_values_become_dead_letters_with_the_validation_reason() -> None:
    negative = view(T0)
    negative.product = Product("p1", "shoes", None, -1.0)
    raw = encode_event(negative)
    dead = decode(raw)
    assert isinstance(dead, DeadLetter) and dead.reason == R_INVALID and dead.raw == raw


def test_an_event_too_far_ahead_of_the_watermark_is_dead_lettered() -> None:
    raw = encode_event(view(T0 + CORE.max_future + 1))
    assert isinstance(decode(raw, watermark=T0 + 1), BehaviourEvent)  # exactly max_future ahead
    dead = decode(raw, watermark=T0)
    assert isinstance(dead, DeadLetter) and dead.reason == R_FUTURE
    assert isinstance(decode(raw, watermark=None), BehaviourEvent)


def test_a_long_record_is_still_checked_for_oversized_strings() -> None:
    ev = view(T0)
    ev.session_id = "s" * (CORE.max_string_length + 1)
    dead = decode(encode_event(ev))
    assert isinstance(dead, DeadLetter) and dead.reason == R_OVERSIZED
    assert "session_id" in dead.error


def test_empty_ids_are_dead_lettered() -> None:
    ev = view(T0)
    ev.event_id = ""
    dead = decode(encode_event(ev))
    # An empty event_id starts the record with a 0 byte, which reads as a Confluent header
    # with an unregistered schema id: refused as wrong_schema rather than misread.
    assert isinstance(dead, DeadLetter) and dead.reason == R_SCHEMA
    ev = view(T0)
    ev.customer_id = ""
    dead = decode(encode_event(ev))
    assert isinstance(dead, DeadLetter) and dead.reason == R_MISSING


def test_empty_properties_decode_as_none() -> None:
    ev = view(T0)
    ev.properties = {}
    decoded = decode(encode_event(ev))
    assert isinstance(decoded, BehaviourEvent) and decoded.properties is None


def test_profile_round_trip_and_validation() -> None:
    p = profile(T0)
    p.lifecycle_stage = "customer"
    assert decode_profile(encode_profile(p), ORIGIN, CORE, RECEIVED) == dataclasses.replace(
        p, origin=ORIGIN
    )
    framed = confluent_frame(SCHEMA_ID_OF["customer_profile"], encode_profile(p))
    assert isinstance(decode_profile(framed, ORIGIN, CORE, RECEIVED), CustomerProfile)
    bad = decode_profile(encode_profile(profile(T0, email="not an email")), ORIGIN, CORE, RECEIVED)
    assert isinstance(bad, DeadLetter) and bad.reason == R_INVALID
    wrong = decode_profile(encode_event(view(T0)), ORIGIN, CORE, RECEIVED)
    assert isinstance(wrong, DeadLetter)


def test_payload_round_trip_schemaless_and_framed() -> None:
    p = payload()
    assert decode_payload(encode_payload(p)) == p
    framed = confluent_frame(SCHEMA_ID_OF["personalized_email"], encode_payload(p))
    assert decode_payload(framed) == p
    p.send_after = T0 + 1
    p.recommendations = []
    assert decode_payload(encode_payload(p)) == p


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x00\x00\x00\x00\x04junk", bytes(range(256))])
def test_dead_letter_round_trip_whatever_the_raw_bytes(raw: bytes) -> None:
    d = DeadLetter(raw, Origin("t", -1, 7), R_DECODE, "bad", RECEIVED)
    assert decode_dead_letter(encode_dead_letter(d)) == d


def test_a_dead_letter_of_a_dead_letter_keeps_its_bytes() -> None:
    d = DeadLetter(b"x", ORIGIN, R_DECODE, "bad", RECEIVED)
    framed = confluent_frame(SCHEMA_ID_OF["dead_letter"], encode_dead_letter(d))
    assert decode_dead_letter(framed) == d


def test_profile_consent_time_round_trips_and_the_earlier_layout_is_still_read() -> None:
    p = dataclasses.replace(profile(T0), consent_updated_at=T0 - 5)
    assert decode_profile(encode_profile(p), ORIGIN, CORE, RECEIVED) == dataclasses.replace(
        p, origin=ORIGIN
    )
    # A producer of the layout before consent_updated_at (the field appended last, absent).
    earlier = encode_profile(profile(T0))[:-1]
    assert encode_profile(profile(T0))[-1:] == b"\x00"  # the null branch of the new field
    old = decode_profile(earlier, ORIGIN, CORE, RECEIVED)
    assert isinstance(old, CustomerProfile) and old.consent_updated_at is None
    framed = decode_profile(confluent_frame(SCHEMA_ID_OF["customer_profile"], earlier), ORIGIN,
                            CORE, RECEIVED)
    assert isinstance(framed, CustomerProfile) and framed.updated_at == T0
    truncated = decode_profile(earlier[:-1], ORIGIN, CORE, RECEIVED)
    assert isinstance(truncated, DeadLetter) and truncated.reason == R_DECODE


def test_payload_segment_round_trips_and_payloads_before_it_still_decode() -> None:
    p = dataclasses.replace(payload(), segment=Segment(5, 2, 4, "active", "high", 3, "customer"))
    assert decode_payload(encode_payload(p)) == p
    record = json.loads(json.dumps(payload_record(p)))
    assert record["segment"] == {"r": 5, "f": 2, "m": 4, "lifecycle": "active",
                                 "engagement_tier": "high", "cluster": 3, "crm_stage": "customer"}
    assert payload_from_record(record) == p
    no_cluster = dataclasses.replace(p, segment=Segment(1, 1, 1, "new", "low", None, None))
    assert decode_payload(encode_payload(no_cluster)) == no_cluster
    # A producer of the contract before `segment` (appended last, with a null default).
    none = payload()
    assert encode_payload(none)[-1:] == b"\x00"  # the null branch of the new field
    earlier = encode_payload(none)[:-1]
    assert decode_payload(earlier) == none and decode_payload(earlier).segment is None
    framed = confluent_frame(SCHEMA_ID_OF["personalized_email"], earlier)
    assert decode_payload(framed) == none
    old_json = payload_record(none)
    del old_json["segment"]
    assert payload_from_record(old_json) == none
