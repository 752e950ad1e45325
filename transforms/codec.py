"""Avro codec of the wire contracts in avro_schemas/: bytes <-> the records of transforms/model.py.

    decode_event(bytes, Origin, watermark, CoreSettings, received_at) -> BehaviourEvent | DeadLetter
    decode_profile(bytes, Origin, CoreSettings, received_at) -> CustomerProfile | DeadLetter
    encode_event / encode_profile / encode_payload / encode_dead_letter / encode_outcome
    decode_payload / decode_dead_letter / decode_outcome (our own outputs: raise on bad bytes)

Two framings are accepted on input: schemaless Avro binary, and the Confluent wire format
(byte 0, a 4-byte big-endian schema id, then the Avro body). They cannot be confused: an event
or profile starts with its id string's length, and an empty id (a 0 byte) is invalid anyway.
A Confluent id must be one of SCHEMA_IDS and name the expected contract, else `wrong_schema`.
Profiles of the layout before `consent_updated_at` was appended are read too (it is null).

The decoders never raise on input: no bytes at all (a tombstone: `empty`), truncated or corrupt
bytes, unknown schema ids, trailing bytes and values that fail transforms/validate.py all become
a DeadLetter carrying the raw bytes (at most a prefix: transforms/sizes.py), the origin, a
machine-readable reason and a message.

Payloads written before `segment` was appended (null default) still decode (segment None).

Dead letters written before `raw_length` and `raw_sha256` were added to the contract (at its
end, with null defaults) still decode: those fields are then None.

Schemas are parsed once at import with their logicalType annotations removed: timestamp-millis
is a long on the wire either way, and reading it as a plain int (epoch ms, as the model keeps
it) skips a datetime round trip per field on the hot path.
"""

from __future__ import annotations

import json
import sys
from io import BytesIO
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from transforms.model import (
    R_DECODE,
    R_EMPTY,
    R_SCHEMA,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    EmailPayload,
    FiredTrigger,
    Origin,
    Outcome,
    Product,
    Recommendation,
)
from transforms.segments import Segment
from transforms.settings import CoreSettings
from transforms.sizes import dead_letter
from transforms.validate import validate_event, validate_profile

EVENT: Final = "behaviour_event"
PROFILE: Final = "customer_profile"
PAYLOAD: Final = "personalized_email"
DEAD_LETTER_SCHEMA: Final = "dead_letter"
OUTCOME_SCHEMA: Final = "outcome"

# Confluent schema ids of our own contracts (what a producer puts after the magic byte).
SCHEMA_IDS: Final[dict[int, str]] = {
    1: EVENT, 2: PROFILE, 3: PAYLOAD, 4: DEAD_LETTER_SCHEMA, 5: OUTCOME_SCHEMA,
    6: "catalog_change",  # transforms/catalog_changes.py
}
SCHEMA_ID_OF: Final[dict[str, int]] = {name: sid for sid, name in SCHEMA_IDS.items()}

# Exceptions fastavro raises on truncated or corrupt input (found by tests/transforms/
# test_codec_fuzz.py): EOFError (short read), IndexError (bad varint, enum or union index),
# UnicodeDecodeError (a ValueError), and for safety the other errors its readers can surface.
_DECODE_ERRORS: Final = (
    EOFError, ValueError, IndexError, KeyError, TypeError, OverflowError, MemoryError,
    StopIteration,
)
_MAX_ERROR = 200


def schema_dir() -> Path:
    """avro_schemas/ of the source tree, else the copy under <prefix>/share/personalize."""
    for candidate in (
        Path(__file__).resolve().parents[1] / "avro_schemas",
        Path(sys.prefix) / "share" / "personalize" / "avro_schemas",
    ):
        if (candidate / f"{EVENT}.avsc").is_file():
            return candidate
    raise FileNotFoundError("avro_schemas/ not found next to transforms/ nor under sys.prefix")


def load_contract(name: str) -> dict[str, Any]:
    """The .avsc of a contract as JSON, exactly as published (logical types included)."""
    with (schema_dir() / f"{name}.avsc").open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


_PARSED: Final[dict[str, Any]] = {
    name: parse_schema(_without_logical_types(load_contract(name))) for name in SCHEMA_IDS.values()
}
_EVENT_SCHEMA: Final = _PARSED[EVENT]
_PROFILE_SCHEMA: Final = _PARSED[PROFILE]
_PAYLOAD_SCHEMA: Final = _PARSED[PAYLOAD]
_DEAD_LETTER_SCHEMA: Final = _PARSED[DEAD_LETTER_SCHEMA]
_OUTCOME_SCHEMA: Final = _PARSED[OUTCOME_SCHEMA]
# The dead-letter contract before raw_length and raw_sha256 (to read what it wrote).
_DEAD_LETTER_ADDED: Final = ("raw_length", "raw_sha256")
_DEAD_LETTER_V1: Final = parse_schema({
    **_without_logical_types(load_contract(DEAD_LETTER_SCHEMA)),
    "fields": [
        f for f in _without_logical_types(load_contract(DEAD_LETTER_SCHEMA))["fields"]
        if f["name"] not in _DEAD_LETTER_ADDED
    ],
})


def _profile_v1() -> Any:
    """Profiles written before consent_updated_at was appended (the only difference)."""
    schema = _without_logical_types(load_contract(PROFILE))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "consent_updated_at"]
    return parse_schema(schema)


_PROFILE_V1_SCHEMA: Final = _profile_v1()
# The payload contract before `segment` was appended (to read what it wrote).
_PAYLOAD_V1: Final = parse_schema({
    **_without_logical_types(load_contract(PAYLOAD)),
    "fields": [
        f for f in _without_logical_types(load_contract(PAYLOAD))["fields"]
        if f["name"] != "segment"
    ],
})


def parsed_schema(name: str) -> Any:
    """The cached fastavro-parsed schema of a contract (logical types removed, see above)."""
    return _PARSED[name]


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    """`body` in the Confluent wire format: magic byte 0 + 4-byte big-endian schema id."""
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def _read(raw: bytes, name: str, schema: Any) -> Any:
    """The decoded Avro record (a dict), or a (reason, message) tuple when it cannot be read."""
    size = len(raw)
    if not size:
        return R_EMPTY, "no value (a null or 0-byte record: a tombstone?)"
    fo = BytesIO(raw)
    if size and raw[0] == 0:
        if size < 5:
            return R_DECODE, f"Confluent header truncated ({size} bytes)"
        schema_id = int.from_bytes(raw[1:5], "big")
        writer = SCHEMA_IDS.get(schema_id)
        if writer != name:
            known = f"the {writer} schema" if writer else "not a registered schema"
            return R_SCHEMA, f"Confluent schema id {schema_id} is {known}, expected {name}"
        fo.seek(5)
    try:
        record = schemaless_reader(fo, schema, None)
    except _DECODE_ERRORS as exc:
        return R_DECODE, f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
    if fo.tell() != size:
        return R_SCHEMA, f"{size - fo.tell()} bytes after the {name} record (another schema?)"
    return record


def decode_event(
    raw: bytes, origin: Origin, watermark: int | None, core: CoreSettings, received_at: int
) -> BehaviourEvent | DeadLetter:
    """Bytes of a behaviour event -> the validated event (origin attached), or a dead letter."""
    r = _read(raw, EVENT, _EVENT_SCHEMA)
    if type(r) is tuple:
        return dead_letter(raw, origin, r[0], r[1], received_at, core)
    product = r["product"]
    order = r["order"]
    email = r["email"]
    consent = r["consent"]
    ev = BehaviourEvent(
        r["event_id"],
        r["customer_id"],
        r["event_type"],
        r["occurred_at"],
        r["session_id"],
        None if product is None else Product(
            product["product_id"], product["category"], product["brand"], product["price"]
        ),
        r["quantity"],
        None if order is None else order["order_id"],
        None if order is None else order["total"],
        None if email is None else email["message_id"],
        None if email is None else email["campaign"],
        None if consent is None else consent["channel"],
        None if consent is None else consent["granted"],
        r["properties"] or None,
        origin,
    )
    # A string cannot hold more characters than the record has bytes.
    problem = validate_event(ev, core, watermark, check_sizes=len(raw) > core.max_string_length)
    if problem is not None:
        return dead_letter(raw, origin, problem[0], problem[1], received_at, core)
    return ev


def decode_profile(
    raw: bytes, origin: Origin, core: CoreSettings, received_at: int
) -> CustomerProfile | DeadLetter:
    """Bytes of a customer profile -> the validated profile (origin attached), or a dead letter."""
    r = _read(raw, PROFILE, _PROFILE_SCHEMA)
    if type(r) is tuple and r[0] == R_DECODE:
        # The earlier layout ends where consent_updated_at begins: read as such, or the error.
        earlier = _read(raw, PROFILE, _PROFILE_V1_SCHEMA)
        if type(earlier) is not tuple:
            r = {**earlier, "consent_updated_at": None}
    if type(r) is tuple:
        return dead_letter(raw, origin, r[0], r[1], received_at, core)
    profile = CustomerProfile(
        customer_id=r["customer_id"],
        updated_at=r["updated_at"],
        email=r["email"],
        first_name=r["first_name"],
        locale=r["locale"],
        time_zone=r["time_zone"],
        consents=r["consents"],
        lifecycle_stage=r["lifecycle_stage"],
        origin=origin,
        consent_updated_at=r["consent_updated_at"],
    )
    problem = validate_profile(profile, core)
    if problem is not None:
        return dead_letter(raw, origin, problem[0], problem[1], received_at, core)
    return profile


def _write(schema: Any, record: dict[str, Any]) -> bytes:
    fo = BytesIO()
    schemaless_writer(fo, schema, record)
    return fo.getvalue()


def encode_event(ev: BehaviourEvent) -> bytes:
    """A behaviour event -> schemaless Avro (origin is runtime only and not written)."""
    p = ev.product
    return _write(_EVENT_SCHEMA, {
        "event_id": ev.event_id,
        "customer_id": ev.customer_id,
        "event_type": ev.event_type,
        "occurred_at": ev.occurred_at,
        "session_id": ev.session_id,
        "product": None if p is None else {
            "product_id": p.product_id, "category": p.category, "brand": p.brand, "price": p.price,
        },
        "quantity": ev.quantity,
        "order": None if ev.order_id is None else {
            "order_id": ev.order_id, "total": ev.order_total,
        },
        "email": None if ev.email_message_id is None else {
            "message_id": ev.email_message_id, "campaign": ev.email_campaign,
        },
        "consent": None if ev.consent_channel is None else {
            "channel": ev.consent_channel, "granted": ev.consent_granted,
        },
        "properties": ev.properties or {},
    })


def encode_profile(p: CustomerProfile) -> bytes:
    """A customer profile -> schemaless Avro."""
    return _write(_PROFILE_SCHEMA, {
        "customer_id": p.customer_id,
        "email": p.email,
        "first_name": p.first_name,
        "locale": p.locale,
        "time_zone": p.time_zone,
        "consents": p.consents,
        "lifecycle_stage": p.lifecycle_stage,
        "updated_at": p.updated_at,
        "consent_updated_at": p.consent_updated_at,
    })


def payload_record(p: EmailPayload) -> dict[str, Any]:
    """A personalized email as the dict of its Avro record (also its JSON form, jsonl.py)."""
    t = p.trigger
    return {
        "message_id": p.message_id,
        "customer_id": p.customer_id,
        "recipient": {
            "email": p.recipient_email, "name": p.recipient_name, "locale": p.locale,
            "time_zone": p.time_zone,
        },
        "trigger": {
            "type": t.type, "key": t.key, "fired_at": t.fired_at, "evidence": t.evidence,
            "source_event_ids": t.source_event_ids, "category": t.category,
        },
        "campaign": p.campaign,
        "variant": p.variant,
        "subject": p.subject,
        "preheader": p.preheader,
        "html": p.html,
        "text": p.text,
        "fallback": p.fallback,
        "fallback_reason": p.fallback_reason,
        "recommendations": [
            {
                "product_id": r.product_id, "score": r.score, "name": r.name,
                "category": r.category, "brand": r.brand, "price": r.price, "url": r.url,
                "image_url": r.image_url,
            }
            for r in p.recommendations
        ],
        "engagement_score": p.engagement_score,
        "send_after": p.send_after,
        "expires_at": p.expires_at,
        "source_event_ids": p.source_event_ids,
        "segment": None if p.segment is None else segment_record(p.segment),
    }


def segment_record(s: Segment) -> dict[str, Any]:
    """A segment as the dict of its Avro record."""
    return {
        "r": s.r, "f": s.f, "m": s.m, "lifecycle": s.lifecycle,
        "engagement_tier": s.engagement_tier, "cluster": s.cluster, "crm_stage": s.crm_stage,
    }


def encode_payload(p: EmailPayload) -> bytes:
    """A personalized email -> schemaless Avro (the output topic's value)."""
    return _write(_PAYLOAD_SCHEMA, payload_record(p))


def _body(raw: bytes, name: str) -> BytesIO:
    """A reader at the Avro body of our own output: Confluent-framed with `name`'s id, else
    schemaless (a dead letter with empty raw bytes also starts with a 0 byte)."""
    fo = BytesIO(raw)
    if len(raw) >= 5 and raw[0] == 0 and SCHEMA_IDS.get(int.from_bytes(raw[1:5], "big")) == name:
        fo.seek(5)
    return fo


def decode_payload(raw: bytes) -> EmailPayload:
    """Bytes written by encode_payload -> the payload; raises ValueError/EOFError on bad bytes."""
    try:
        r: Any = schemaless_reader(_body(raw, PAYLOAD), _PAYLOAD_SCHEMA, None)
    except EOFError:  # the older contract ends where `segment` begins
        r = schemaless_reader(_body(raw, PAYLOAD), _PAYLOAD_V1, _PAYLOAD_SCHEMA)
    return payload_from_record(r)


def payload_from_record(r: Any) -> EmailPayload:
    """The payload of a `payload_record` dict (decoded Avro, or parsed JSON)."""
    rc = r["recipient"]
    t = r["trigger"]
    return EmailPayload(
        message_id=r["message_id"],
        customer_id=r["customer_id"],
        recipient_email=rc["email"],
        recipient_name=rc["name"],
        locale=rc["locale"],
        time_zone=rc["time_zone"],
        trigger=FiredTrigger(
            type=t["type"], key=t["key"], fired_at=t["fired_at"], evidence=t["evidence"],
            source_event_ids=t["source_event_ids"], category=t["category"],
        ),
        campaign=r["campaign"],
        variant=r["variant"],
        subject=r["subject"],
        preheader=r["preheader"],
        html=r["html"],
        text=r["text"],
        fallback=r["fallback"],
        fallback_reason=r["fallback_reason"],
        recommendations=[Recommendation(**rec) for rec in r["recommendations"]],
        engagement_score=r["engagement_score"],
        send_after=r["send_after"],
        expires_at=r["expires_at"],
        source_event_ids=r["source_event_ids"],
        segment=None if (s := r.get("segment")) is None else Segment(
            s["r"], s["f"], s["m"], s["lifecycle"], s["engagement_tier"], s.get("cluster"),
            s.get("crm_stage"),
        ),
    )


def encode_dead_letter(d: DeadLetter) -> bytes:
    """A dead letter -> schemaless Avro (the dead-letter topic's value)."""
    o = d.origin
    return _write(_DEAD_LETTER_SCHEMA, {
        "raw": d.raw,
        "origin": {"topic": o.topic, "partition": o.partition, "offset": o.offset},
        "reason": d.reason,
        "error": d.error,
        "received_at": d.received_at,
        "raw_length": d.raw_length,
        "raw_sha256": d.raw_sha256,
    })


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Bytes written by encode_dead_letter (this contract or the one before raw_length and
    raw_sha256) -> the dead letter; raises on bad bytes."""
    try:
        r: Any = schemaless_reader(_body(raw, DEAD_LETTER_SCHEMA), _DEAD_LETTER_SCHEMA, None)
    except EOFError:  # the older contract ends where the new fields begin
        r = schemaless_reader(_body(raw, DEAD_LETTER_SCHEMA), _DEAD_LETTER_V1,
                              _DEAD_LETTER_SCHEMA)
    o = r["origin"]
    return DeadLetter(
        raw=r["raw"],
        origin=Origin(o["topic"], o["partition"], o["offset"]),
        reason=r["reason"],
        error=r["error"],
        received_at=r["received_at"],
        raw_length=r["raw_length"],
        raw_sha256=r["raw_sha256"],
    )


def encode_outcome(o: Outcome) -> bytes:
    """An attributed outcome -> schemaless Avro (the outcomes topic's value)."""
    return _write(_OUTCOME_SCHEMA, {
        "message_id": o.message_id,
        "customer_id": o.customer_id,
        "trigger_type": o.trigger_type,
        "variant": o.variant,
        "kind": o.kind,
        "value": o.value,
        "occurred_at": o.occurred_at,
        "fired_at": o.fired_at,
        "holdout": o.holdout,
        "event_id": o.event_id,
    })


def decode_outcome(raw: bytes) -> Outcome:
    """Bytes written by encode_outcome -> the outcome; raises on bad bytes."""
    r: Any = schemaless_reader(_body(raw, OUTCOME_SCHEMA), _OUTCOME_SCHEMA, None)
    return Outcome(**r)
