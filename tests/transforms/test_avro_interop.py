"""The project's Avro and the Apache `avro` reference library agree, both ways, on the .avsc."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from datetime import UTC, datetime
from typing import Any

import avro.io
import avro.schema
import pytest

from tests.builders import T0, profile, view
from tests.transforms.test_codec import full_event, payload
from transforms.codec import (
    decode_dead_letter,
    decode_event,
    decode_outcome,
    decode_payload,
    decode_profile,
    encode_dead_letter,
    encode_event,
    encode_outcome,
    encode_payload,
    encode_profile,
    schema_dir,
)
from transforms.jsonl import to_json
from transforms.model import DeadLetter, Origin, Outcome
from transforms.settings import CoreSettings

CORE = CoreSettings()
ORIGIN = Origin("interop")


def schema(name: str) -> avro.schema.Schema:
    return avro.schema.parse((schema_dir() / f"{name}.avsc").read_text())


def reference_read(name: str, raw: bytes) -> Any:
    decoder = avro.io.BinaryDecoder(io.BytesIO(raw))
    return avro.io.DatumReader(schema(name)).read(decoder)


def reference_write(name: str, datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    avro.io.DatumWriter(schema(name)).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def millis(value: Any) -> Any:
    """The reference library's datetimes back to epoch ms, recursively."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [millis(v) for v in value]
    return value


EVENT_DATUM = {
    "event_id": "e-full", "customer_id": "c1", "event_type": "purchase", "occurred_at": ts(T0),
    "session_id": "s1",
    "product": {"product_id": "p1", "category": "shoes", "brand": "acme", "price": 49.5},
    "quantity": 2, "order": {"order_id": "o1", "total": 99.0},
    "email": {"message_id": "m1", "campaign": "weekly"},
    "consent": {"channel": "email", "granted": True},
    "properties": {"utm": "mail", "é": "ü"},
}


def test_events_encoded_here_read_in_the_reference_library() -> None:
    datum = reference_read("behaviour_event", encode_event(full_event()))
    assert millis(datum) == millis(EVENT_DATUM)
    minimal = reference_read("behaviour_event", encode_event(view(T0, eid="e1")))
    assert minimal["event_id"] == "e1" and minimal["order"] is None and minimal["properties"] == {}


def test_events_written_by_the_reference_library_decode_here() -> None:
    decoded = decode_event(reference_write("behaviour_event", EVENT_DATUM), ORIGIN, None, CORE, 0)
    expected = full_event()
    expected.origin = ORIGIN
    assert decoded == expected


def test_profiles_both_ways() -> None:
    p = profile(T0)
    datum = reference_read("customer_profile", encode_profile(p))
    assert millis(datum) == {
        "customer_id": "c1", "email": "ada@example.com", "first_name": "Ada", "locale": "en-GB",
        "time_zone": "UTC", "consents": {"email": True}, "lifecycle_stage": None, "updated_at": T0,
        "consent_updated_at": None,
    }
    datum["updated_at"] = ts(T0)
    p.origin = ORIGIN
    assert decode_profile(reference_write("customer_profile", datum), ORIGIN, CORE, 0) == p
    datum["consent_updated_at"] = ts(T0 - 1000)
    p.consent_updated_at = T0 - 1000
    assert decode_profile(reference_write("customer_profile", datum), ORIGIN, CORE, 0) == p
    assert millis(reference_read("customer_profile", encode_profile(p)))["consent_updated_at"] == (
        T0 - 1000
    )


def test_payloads_both_ways() -> None:
    p = payload()
    datum = reference_read("personalized_email", encode_payload(p))
    flat = millis(datum)
    assert flat["message_id"] == p.message_id
    assert flat["recipient"] == {"email": "ada@example.com", "name": "Ada", "locale": "en-GB",
                                 "time_zone": "Europe/London"}
    assert flat["trigger"]["fired_at"] == T0 and flat["trigger"]["evidence"] == ["p1", "p2"]
    assert flat["expires_at"] == p.expires_at and flat["send_after"] is None
    assert flat["recommendations"][0]["product_id"] == "p3"
    assert decode_payload(reference_write("personalized_email", datum)) == p


@pytest.mark.parametrize("raw", [b"", b"\x00\x01garbage\xff"])
def test_dead_letters_both_ways(raw: bytes) -> None:
    sha = hashlib.sha256(raw).hexdigest()
    d = DeadLetter(raw, Origin("behaviour-events", 2, 10**12), "decode_error", "EOFError", T0,
                   len(raw), sha)
    datum = reference_read("dead_letter", encode_dead_letter(d))
    assert millis(datum) == {
        "raw": raw, "origin": {"topic": "behaviour-events", "partition": 2, "offset": 10**12},
        "reason": "decode_error", "error": "EOFError", "received_at": T0,
        "raw_length": len(raw), "raw_sha256": sha,
    }
    assert decode_dead_letter(reference_write("dead_letter", datum)) == d


@pytest.mark.parametrize("variant,holdout", [("a", False), (None, True)])
def test_outcomes_both_ways(variant: str | None, holdout: bool) -> None:
    o = Outcome("m1", "c1", "cart_abandonment", variant, "purchase", 49.5, T0 + 1, T0, holdout,
                "e1")
    datum = reference_read("outcome", encode_outcome(o))
    assert millis(datum) == {
        "message_id": "m1", "customer_id": "c1", "trigger_type": "cart_abandonment",
        "variant": variant, "kind": "purchase", "value": 49.5, "occurred_at": T0 + 1,
        "fired_at": T0, "holdout": holdout, "event_id": "e1",
    }
    assert decode_outcome(reference_write("outcome", datum)) == o
    assert to_json(o) == dataclasses.asdict(o)  # outcomes.jsonl: exactly the record's fields
