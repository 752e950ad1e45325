from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.builders import T0, consent, profile, view
from tests.transforms.test_codec import full_event, payload
from transforms.jsonl import (
    audit_from_json,
    dead_letter_from_json,
    dumps,
    event_from_json,
    event_to_json,
    item_from_json,
    item_to_json,
    payload_from_json,
    profile_from_json,
    to_json,
    write_jsonl,
)
from transforms.model import AuditRecord, DeadLetter, FeatureSnapshot, Origin


def through_text(d: dict[str, Any]) -> Any:
    return json.loads(dumps(d))


def test_events_and_profiles_round_trip_through_json_text() -> None:
    for ev in (full_event(), view(T0), consent(T0, False)):
        assert event_from_json(through_text(event_to_json(ev))) == ev
    p = profile(T0)
    assert profile_from_json(through_text(to_json(p))) == p
    assert item_from_json(through_text(item_to_json(p))) == p
    ev = view(T0)
    assert item_from_json(through_text(item_to_json(ev))) == ev
    assert item_from_json(through_text(event_to_json(ev))) == ev  # a bare event


def test_the_runtime_origin_is_not_written() -> None:
    ev = view(T0)
    ev.origin = Origin("t", 1, 2)
    assert "origin" not in event_to_json(ev)


def test_payload_json_has_the_documented_top_level_keys() -> None:
    d = through_text(to_json(payload()))
    assert {"message_id", "customer_id", "send_after", "expires_at", "trigger"} <= set(d)
    assert d["trigger"] == {
        "type": "cart_abandonment", "key": "k1", "fired_at": T0, "evidence": ["p1", "p2"],
        "source_event_ids": ["e1", "e2"], "category": "shoes",
    }
    assert d["send_after"] is None
    assert payload_from_json(d) == payload()


def test_audit_dead_letter_and_features_round_trip() -> None:
    audit = AuditRecord("c1", "cart_abandonment", "k", T0, "suppressed:consent")
    assert audit_from_json(through_text(to_json(audit))) == audit
    dead = DeadLetter(b"\x00\xff raw", Origin("events", 2, 9), "decode_error", "EOFError", T0)
    d = through_text(to_json(dead))
    assert d["raw"] == "AP8gcmF3"
    assert dead_letter_from_json(d) == dead
    snap = FeatureSnapshot("c1", T0, {"views_1h": {"shoes": 2}}, 12.5, None)
    assert through_text(to_json(snap))["features"] == {"views_1h": {"shoes": 2}}


def test_dumps_is_compact_utf8_and_refuses_nan() -> None:
    assert dumps({"name": "Zoë", "n": 1}) == '{"name":"Zoë","n":1}'
    with pytest.raises(ValueError):
        dumps({"score": float("nan")})
    with pytest.raises(TypeError):
        to_json(object())


def test_write_jsonl_writes_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = [AuditRecord("c1", "t", str(i), T0, "emitted", f"m{i}") for i in range(3)]
    assert write_jsonl(path, records) == 3
    assert [audit_from_json(json.loads(line)) for line in path.read_text().splitlines()] == records


@pytest.mark.parametrize("d, error", [
    ({"customer_id": "c", "event_type": "page_view", "occurred_at": 1}, KeyError),
    ({"event_id": "e", "customer_id": "c", "event_type": "page_view", "occurred_at": "2026"},
     TypeError),
    ({"event_id": "e", "customer_id": "c", "event_type": "page_view", "occurred_at": True},
     TypeError),
    ({"event_id": "e", "customer_id": 5, "event_type": "page_view", "occurred_at": 1}, TypeError),
    ({"event_id": "e", "customer_id": "c", "event_type": "page_view", "occurred_at": 1,
      "quantiy": 2}, ValueError),
    ({"event_id": "e", "customer_id": "c", "event_type": "product_view", "occurred_at": 1,
      "product": {"product_id": "p", "price": "12"}}, TypeError),
    ({"event_id": "e", "customer_id": "c", "event_type": "product_view", "occurred_at": 1,
      "product": {"product_id": "p", "colour": "red"}}, ValueError),
    ({"event_id": "e", "customer_id": "c", "event_type": "product_view", "occurred_at": 1,
      "product": "p"}, TypeError),
    ({"event_id": "e", "customer_id": "c", "event_type": "page_view", "occurred_at": 1,
      "properties": {"a": 1}}, TypeError),
    ({"event_id": "e", "customer_id": "c", "event_type": "consent_change", "occurred_at": 1,
      "consent_channel": "email", "consent_granted": "yes"}, TypeError),
    ({"kind": "order", "event_id": "e"}, ValueError),
    ([1, 2], TypeError),
])
def test_input_json_is_checked_strictly(d: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        item_from_json(d)


def test_integer_prices_are_accepted_as_numbers() -> None:
    ev = event_from_json({"event_id": "e", "customer_id": "c", "event_type": "product_view",
                          "occurred_at": 1, "product": {"product_id": "p", "price": 12}})
    assert ev.product is not None and ev.product.price == 12.0
    assert isinstance(ev.product.price, float)


def test_profiles_are_checked_strictly() -> None:
    with pytest.raises(TypeError):
        profile_from_json({"customer_id": "c", "updated_at": 1, "consents": {"email": "yes"}})
    with pytest.raises(KeyError):
        profile_from_json({"customer_id": "c"})
    assert profile_from_json({"customer_id": "c", "updated_at": 1}).consents == {}


def test_profile_consent_time_is_read_and_written() -> None:
    p = profile_from_json({"customer_id": "c", "updated_at": 5, "consent_updated_at": 3,
                           "consents": {"email": False}})
    assert p.consent_updated_at == 3
    assert profile_from_json(to_json(p)) == p
    with pytest.raises(TypeError):
        profile_from_json({"customer_id": "c", "updated_at": 5, "consent_updated_at": "3"})
