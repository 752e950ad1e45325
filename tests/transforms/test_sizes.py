"""Every output has a size bound (DESIGN.md section 8, Sizes): hostile inputs against it."""

import base64
import hashlib
import json
from pathlib import Path

import pytest

from tests.builders import CART_DELAY, T0, add, profile
from tests.transforms.drive import drive, payloads
from transforms.catalog import CatalogItem, InMemoryCatalog
from transforms.codec import (
    decode_dead_letter,
    decode_event,
    encode_dead_letter,
    encode_payload,
    load_contract,
)
from transforms.core import Core
from transforms.jsonl import dead_letter_from_json, dead_letter_to_json, item_to_json
from transforms.model import R_DECODE, R_LATE, DeadLetter, Origin
from transforms.readers import read_events_jsonl
from transforms.settings import CoreSettings, SettingsError
from transforms.sizes import dead_letter, display_name

ORIGIN = Origin("behaviour-events", 1, 7)


def cart_payload(n: int, core: Core, name: str = "Ada", pid: str = "p{:05d}") -> bytes:
    items = [profile(name=name)] + [add(T0 + i, pid=pid.format(i)) for i in range(n)]
    _, out = drive(core, items, T0 + n + CART_DELAY)
    (payload,) = payloads(out)
    return encode_payload(payload)


def test_a_2000_item_cart_gives_a_bounded_payload_with_capped_evidence() -> None:
    # The cart's own state cap (max_cart_lines) is lifted: the output bounds are under test.
    settings = CoreSettings(max_cart_lines=5_000)
    core = Core(settings)
    items = [profile()] + [add(T0 + i, pid=f"p{i:05d}") for i in range(2000)]
    _, out = drive(core, items, T0 + 2000 + CART_DELAY)
    (payload,) = payloads(out)
    assert len(payload.trigger.evidence) == settings.max_evidence_items
    assert len(payload.trigger.source_event_ids) <= settings.max_evidence_items
    assert len(payload.source_event_ids) <= settings.max_evidence_items
    assert not payload.fallback
    assert "2000 items" in payload.preheader         # the whole cart, not what is shown
    # The email shows at most max_rendered_items of the cart.
    shown = [f"p{i:05d}" for i in range(2000) if f"/p/p{i:05d}" in payload.html]
    assert 0 < len(shown) <= settings.max_rendered_items
    assert len(encode_payload(payload)) < 100_000


def test_a_payload_over_the_output_limit_is_the_flagged_static_fallback() -> None:
    # Catalog names of 2 000 characters: rendered, they overflow a 20 000-byte limit.
    catalog = InMemoryCatalog([
        CatalogItem(f"p{i}", "N" * 2000, "shoes", "acme", 1.0) for i in range(10)
    ])
    settings = CoreSettings(max_output_bytes=20_000, max_string_length=256,
                            max_dead_letter_raw=1000)
    core = Core(settings, catalog=catalog)
    items = [profile()] + [add(T0 + i, pid=f"p{i}") for i in range(10)]
    _, out = drive(core, items, T0 + 10 + CART_DELAY)
    (payload,) = payloads(out)
    assert payload.fallback and payload.fallback_reason
    assert "output limit" in payload.fallback_reason
    assert len(encode_payload(payload)) <= settings.max_output_bytes
    assert "N" * 100 not in payload.html


@pytest.mark.parametrize("limit", [100_000, 200_000, 900_000])
def test_no_payload_exceeds_the_limit_whatever_the_input_sizes(limit: int) -> None:
    settings = CoreSettings(max_output_bytes=limit)
    huge = "\U0001f600" * settings.max_string_length          # 4 bytes a character
    catalog = InMemoryCatalog([
        CatalogItem(huge[:-5] + f"{i:05d}", huge, huge, huge, 1.0,
                    "https://x.invalid/" + "a" * 2000, "https://x.invalid/" + "b" * 2000)
        for i in range(300)
    ])
    core = Core(settings, catalog=catalog)
    raw = cart_payload(300, core, name=huge, pid=huge[:-5] + "{:05d}")
    assert len(raw) <= limit


def test_an_output_limit_too_small_for_any_payload_is_refused() -> None:
    with pytest.raises(SettingsError, match="max_output_bytes"):
        Core(CoreSettings(max_output_bytes=10_000))


@pytest.mark.parametrize("name, expected", [
    ("Ada\r\nBcc: evil@example.com", "Ada Bcc: evil@example.com"),
    ("\x00Ada\u2028Lovelace\x7f", "Ada Lovelace"),
    ("  ", None),
    (None, None),
])
def test_names_lose_control_characters(name: str | None, expected: str | None) -> None:
    assert display_name(name, 64) == expected


def test_names_are_capped_in_the_payload() -> None:
    settings = CoreSettings(max_name_length=40)
    core = Core(settings)
    items = [profile(name="Ada\r\n" + "n" * 2000), add(T0)]
    _, out = drive(core, items, T0 + CART_DELAY)
    (payload,) = payloads(out)
    assert payload.recipient_name is not None
    assert len(payload.recipient_name) == 40 and payload.recipient_name.startswith("Ada n")
    assert "\r" not in payload.recipient_name and "\n" not in payload.recipient_name
    assert "n" * 41 not in payload.html and "n" * 41 not in payload.text


def test_a_dead_letter_keeps_a_prefix_of_the_raw_bytes_with_their_length_and_hash() -> None:
    raw = bytes(range(256)) * 4000                      # 1 024 000 bytes
    d = dead_letter(raw, ORIGIN, R_DECODE, "x" * 10_000, 5, CoreSettings(max_dead_letter_raw=100))
    assert d.raw == raw[:100]
    assert d.raw_length == len(raw)
    assert d.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(d.error) <= CoreSettings().max_string_length
    assert decode_dead_letter(encode_dead_letter(d)) == d
    assert dead_letter_from_json(json.loads(json.dumps(dead_letter_to_json(d)))) == d


def test_a_huge_raw_record_gives_a_bounded_dead_letter() -> None:
    settings = CoreSettings()
    raw = b"\x02" + b"\xff" * 5_000_000
    d = decode_event(raw, ORIGIN, None, settings, 1)
    assert isinstance(d, DeadLetter) and d.reason == R_DECODE
    assert len(d.raw) == settings.max_dead_letter_raw and d.raw_length == len(raw)
    assert len(encode_dead_letter(d)) <= settings.max_output_bytes


def test_a_late_event_with_a_huge_property_map_gives_a_bounded_dead_letter() -> None:
    settings = CoreSettings(max_dead_letter_raw=1000)
    core = Core(settings)
    props = {f"k{i:03d}" + "k" * 2000: "v" * 2048 for i in range(settings.max_properties)}
    late = add(T0, properties=props)
    state, _, _ = core.step(None, add(T0 + 60_000))
    _, out, _ = core.step(state, late, T0 + 30_000)
    (dead,) = [r for k, r in out if k == "dead_letter"]
    assert dead.reason == R_LATE and len(dead.raw) == 1000 and dead.raw_length > 100_000


def test_a_huge_jsonl_line_gives_a_bounded_dead_letter(tmp_path: Path) -> None:
    settings = CoreSettings(max_dead_letter_raw=1000)
    path = tmp_path / "e.jsonl"
    line = json.dumps({**item_to_json(add(T0)), "junk": "j" * 2_000_000})
    path.write_text(line + "\n")
    (d,) = list(read_events_jsonl(path, core=settings))
    assert isinstance(d, DeadLetter) and len(d.raw) == 1000
    assert d.raw_length == len(line) and d.raw_sha256 == hashlib.sha256(line.encode()).hexdigest()
    assert base64.b64decode(dead_letter_to_json(d)["raw"]) == line.encode()[:1000]


def test_the_dead_letter_schema_adds_its_fields_with_defaults() -> None:
    fields = {f["name"]: f for f in load_contract("dead_letter")["fields"]}
    for name in ("raw_length", "raw_sha256"):
        assert "default" in fields[name] and fields[name]["default"] is None


def test_dead_letters_written_before_the_new_fields_still_decode() -> None:
    from io import BytesIO

    from fastavro import parse_schema, schemaless_writer

    old = load_contract("dead_letter")
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("raw_length", "raw_sha256")]
    fo = BytesIO()
    schemaless_writer(fo, parse_schema(old), {
        "raw": b"abc", "origin": {"topic": "t", "partition": 0, "offset": 3},
        "reason": R_DECODE, "error": "bad", "received_at": 9,
    })
    d = decode_dead_letter(fo.getvalue())
    assert (d.raw, d.reason, d.raw_length, d.raw_sha256) == (b"abc", R_DECODE, None, None)
