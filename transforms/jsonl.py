"""JSON forms of the records (one JSON object per line in DIR/*.jsonl and events JSONL files).

    to_json(record) -> dict        record: event, profile, payload, audit, dead letter, features
    <kind>_from_json(dict) -> record

The dicts follow the dataclasses of transforms/model.py field by field (nested records as
nested objects: `product`, a payload's `trigger` and `recommendations`, a dead letter's
`origin`), except that runtime-only `origin` of events and profiles is left out. Timestamps are
epoch milliseconds or null; a dead letter's raw bytes are base64.

event_from_json / profile_from_json read input written by others, so they check shapes and
types: KeyError for a missing required field, TypeError for a wrong type, ValueError for an
unknown field (a misspelt name must not silently drop data). Values are judged later by
transforms/validate.py. The other *_from_json read our own outputs back (tests, comparisons).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transforms.codec import payload_from_record, payload_record
from transforms.model import (
    AuditRecord,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    EmailPayload,
    FeatureSnapshot,
    Origin,
    Outcome,
    Product,
)

KIND_EVENT = "event"
KIND_PROFILE = "profile"


def event_to_json(ev: BehaviourEvent) -> dict[str, Any]:
    """A behaviour event as a JSON-able dict (without its runtime origin)."""
    p = ev.product
    return {
        "event_id": ev.event_id,
        "customer_id": ev.customer_id,
        "event_type": ev.event_type,
        "occurred_at": ev.occurred_at,
        "session_id": ev.session_id,
        "product": None if p is None else {
            "product_id": p.product_id, "category": p.category, "brand": p.brand, "price": p.price,
        },
        "quantity": ev.quantity,
        "order_id": ev.order_id,
        "order_total": ev.order_total,
        "email_message_id": ev.email_message_id,
        "email_campaign": ev.email_campaign,
        "consent_channel": ev.consent_channel,
        "consent_granted": ev.consent_granted,
        "properties": ev.properties,
    }


def profile_to_json(p: CustomerProfile) -> dict[str, Any]:
    """A customer profile as a JSON-able dict (without its runtime origin)."""
    return {
        "customer_id": p.customer_id,
        "updated_at": p.updated_at,
        "email": p.email,
        "first_name": p.first_name,
        "locale": p.locale,
        "time_zone": p.time_zone,
        "consents": p.consents,
        "lifecycle_stage": p.lifecycle_stage,
        "consent_updated_at": p.consent_updated_at,
    }


def payload_to_json(p: EmailPayload) -> dict[str, Any]:
    """A personalized email as a JSON-able dict: the same shape as its Avro record."""
    return payload_record(p)


def audit_to_json(a: AuditRecord) -> dict[str, Any]:
    """A policy decision as a JSON-able dict."""
    return {
        "customer_id": a.customer_id, "type": a.type, "key": a.key, "fired_at": a.fired_at,
        "decision": a.decision, "message_id": a.message_id,
    }


def dead_letter_to_json(d: DeadLetter) -> dict[str, Any]:
    """A dead letter as a JSON-able dict; raw bytes base64."""
    o = d.origin
    return {
        "raw": base64.b64encode(d.raw).decode("ascii"),
        "origin": {"topic": o.topic, "partition": o.partition, "offset": o.offset},
        "reason": d.reason,
        "error": d.error,
        "received_at": d.received_at,
        "raw_length": d.raw_length,
        "raw_sha256": d.raw_sha256,
    }


def features_to_json(f: FeatureSnapshot) -> dict[str, Any]:
    """A feature snapshot as a JSON-able dict (its `features` must already be JSON-able)."""
    return {
        "customer_id": f.customer_id, "as_of": f.as_of, "features": f.features,
        "engagement_score": f.engagement_score, "last_trigger": f.last_trigger,
    }


def outcome_to_json(o: Outcome) -> dict[str, Any]:
    """An attributed outcome as a JSON-able dict (exactly the Outcome fields)."""
    return {
        "message_id": o.message_id, "customer_id": o.customer_id,
        "trigger_type": o.trigger_type, "variant": o.variant, "kind": o.kind,
        "value": o.value, "occurred_at": o.occurred_at, "fired_at": o.fired_at,
        "holdout": o.holdout, "event_id": o.event_id,
    }


_TO_JSON: dict[type, Any] = {
    BehaviourEvent: event_to_json,
    CustomerProfile: profile_to_json,
    EmailPayload: payload_to_json,
    AuditRecord: audit_to_json,
    DeadLetter: dead_letter_to_json,
    FeatureSnapshot: features_to_json,
    Outcome: outcome_to_json,
}


def to_json(record: Any) -> dict[str, Any]:
    """Any record of transforms/model.py listed above as a JSON-able dict."""
    try:
        convert = _TO_JSON[type(record)]
    except KeyError:
        raise TypeError(f"no JSON form for {type(record).__name__}") from None
    result: dict[str, Any] = convert(record)
    return result


def item_to_json(item: Any) -> dict[str, Any]:
    """An input item (event, profile, catalog change) as a line of an events JSONL file: its
    JSON form plus `kind`."""
    if isinstance(item, BehaviourEvent):
        return {"kind": KIND_EVENT, **event_to_json(item)}
    if isinstance(item, CustomerProfile):
        return {"kind": KIND_PROFILE, **profile_to_json(item)}
    from transforms.catalog_changes import change_to_json

    return change_to_json(item)


def dumps(obj: dict[str, Any]) -> str:
    """One compact JSON line (no newline): UTF-8 text kept as is, NaN and infinity refused."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Write each record's JSON form as one line of `path`; returns the number of lines."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(dumps(to_json(record)))
            fh.write("\n")
            n += 1
    return n


# -- reading input written by others (strict) ---------------------------------------------------

_EVENT_KEYS = frozenset(event_to_json(BehaviourEvent("", "", "", 0))) | {"kind"}
_PRODUCT_KEYS = frozenset({"product_id", "category", "brand", "price"})
_PROFILE_KEYS = frozenset(profile_to_json(CustomerProfile("", 0))) | {"kind"}


def _check_keys(d: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = d.keys() - allowed
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(sorted(unknown))[:200]}")


def _str(d: dict[str, Any], key: str, required: bool = False) -> Any:
    value = d.get(key)
    if value is None:
        if required:
            raise KeyError(key)
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _int(d: dict[str, Any], key: str, required: bool = False) -> Any:
    value = d.get(key)
    if value is None:
        if required:
            raise KeyError(key)
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be an integer, not {type(value).__name__}")
    return value


def _float(d: dict[str, Any], key: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{key} must be a number, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any double
        raise ValueError(f"{key} is too large for a double") from None


def _bool(d: dict[str, Any], key: str) -> bool | None:
    value = d.get(key)
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false, not {type(value).__name__}")
    return value


def _str_map(d: dict[str, Any], key: str, value_type: type) -> Any:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, value_type) for k, v in value.items()
    ):
        raise TypeError(f"{key} must map strings to {value_type.__name__}")
    return value


def event_from_json(d: dict[str, Any]) -> BehaviourEvent:
    """An event from its JSON form (see the module docstring for the errors raised)."""
    if not isinstance(d, dict):
        raise TypeError(f"an event must be a JSON object, not {type(d).__name__}")
    _check_keys(d, _EVENT_KEYS, "event")
    product = None
    pd = d.get("product")
    if pd is not None:
        if not isinstance(pd, dict):
            raise TypeError("product must be an object")
        _check_keys(pd, _PRODUCT_KEYS, "product")
        product = Product(
            _str(pd, "product_id", True), _str(pd, "category"), _str(pd, "brand"),
            _float(pd, "price"),
        )
    return BehaviourEvent(
        event_id=_str(d, "event_id", True),
        customer_id=_str(d, "customer_id", True),
        event_type=_str(d, "event_type", True),
        occurred_at=_int(d, "occurred_at", True),
        session_id=_str(d, "session_id"),
        product=product,
        quantity=_int(d, "quantity"),
        order_id=_str(d, "order_id"),
        order_total=_float(d, "order_total"),
        email_message_id=_str(d, "email_message_id"),
        email_campaign=_str(d, "email_campaign"),
        consent_channel=_str(d, "consent_channel"),
        consent_granted=_bool(d, "consent_granted"),
        properties=_str_map(d, "properties", str) or None,
    )


def profile_from_json(d: dict[str, Any]) -> CustomerProfile:
    """A profile from its JSON form (see the module docstring for the errors raised)."""
    if not isinstance(d, dict):
        raise TypeError(f"a profile must be a JSON object, not {type(d).__name__}")
    _check_keys(d, _PROFILE_KEYS, "profile")
    return CustomerProfile(
        customer_id=_str(d, "customer_id", True),
        updated_at=_int(d, "updated_at", True),
        email=_str(d, "email"),
        first_name=_str(d, "first_name"),
        locale=_str(d, "locale"),
        time_zone=_str(d, "time_zone"),
        consents=_str_map(d, "consents", bool) or {},
        lifecycle_stage=_str(d, "lifecycle_stage"),
        consent_updated_at=_int(d, "consent_updated_at"),
    )


def item_from_json(d: dict[str, Any]) -> Any:
    """A line of an events JSONL file: {"kind": "event" | "profile" | "catalog_change", ...},
    or a bare event."""
    if not isinstance(d, dict):
        raise TypeError(f"a line must be a JSON object, not {type(d).__name__}")
    kind = d.get("kind", KIND_EVENT)
    if kind == KIND_EVENT:
        return event_from_json(d)
    if kind == KIND_PROFILE:
        return profile_from_json(d)
    from transforms.catalog_changes import KIND_CHANGE, change_from_json

    if kind == KIND_CHANGE:
        return change_from_json(d)
    raise ValueError(f"unknown kind {str(kind)[:64]!r} (event, profile or catalog_change)")


# -- reading our own outputs back ---------------------------------------------------------------

def payload_from_json(d: dict[str, Any]) -> EmailPayload:
    """A payload from payload_to_json's form."""
    return payload_from_record(d)


def audit_from_json(d: dict[str, Any]) -> AuditRecord:
    """An audit record from audit_to_json's form."""
    return AuditRecord(**d)


def outcome_from_json(d: dict[str, Any]) -> Outcome:
    """An outcome from outcome_to_json's form."""
    return Outcome(**d)


def dead_letter_from_json(d: dict[str, Any]) -> DeadLetter:
    """A dead letter from dead_letter_to_json's form (raw_length, raw_sha256: None if absent,
    as in files written before them)."""
    o = d["origin"]
    return DeadLetter(
        raw=base64.b64decode(d["raw"]),
        origin=Origin(o["topic"], o["partition"], o["offset"]),
        reason=d["reason"],
        error=d["error"],
        received_at=d["received_at"],
        raw_length=d.get("raw_length"),
        raw_sha256=d.get("raw_sha256"),
    )
