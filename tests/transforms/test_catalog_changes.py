"""Catalog changes on the wire: hostile bytes and values are dead letters with reasons
(transforms/catalog_changes.py), the JSONL form round-trips, a replay file reads them."""

from __future__ import annotations

import json
import struct

import pytest

from tests.builders import T0
from transforms.catalog_changes import (
    CatalogChange,
    change_from_json,
    change_to_json,
    decode_change,
    encode_change,
)
from transforms.codec import SCHEMA_ID_OF, confluent_frame
from transforms.model import (
    R_DECODE,
    R_EMPTY,
    R_FUTURE,
    R_INVALID,
    R_MISSING,
    R_OVERSIZED,
    R_SCHEMA,
    DeadLetter,
    Origin,
)
from transforms.readers import read_events_jsonl
from transforms.settings import MINUTE, CoreSettings

NOW = T0
ORIGIN = Origin("catalog-changes", 0, 7)
S = CoreSettings()


def change(**kw) -> CatalogChange:
    fields = dict(change_id="ch1", product_id="p1", occurred_at=T0 - MINUTE, price=9.5,
                  in_stock=True, category="shoes", brand="acme", name="Runner")
    fields.update(kw)
    return CatalogChange(**fields)


def decoded(c: CatalogChange):
    return decode_change(encode_change(c), ORIGIN, S, NOW)


def test_round_trip_plain_and_confluent():
    c = change()
    got = decoded(c)
    assert got == change(origin=ORIGIN)
    framed = confluent_frame(SCHEMA_ID_OF["catalog_change"], encode_change(c))
    framed = decode_change(framed, ORIGIN, S, NOW)
    assert isinstance(framed, CatalogChange) and framed.price == 9.5


@pytest.mark.parametrize("bad, reason", [
    (dict(price=-0.01), R_INVALID),
    (dict(price=float("nan")), R_INVALID),
    (dict(price=float("inf")), R_INVALID),
    (dict(product_id=""), R_MISSING),
    # An empty first string is a 0 byte: read as a Confluent frame of no registered schema.
    (dict(change_id=""), R_SCHEMA),
    (dict(price=None, in_stock=None), R_INVALID),
    (dict(occurred_at=NOW + S.max_future + 1), R_FUTURE),
    (dict(occurred_at=-1), R_INVALID),
    (dict(name="x" * (S.max_string_length + 1)), R_OVERSIZED),
])
def test_hostile_values_are_dead_letters_with_their_reason(bad, reason):
    dead = decoded(change(**bad))
    assert isinstance(dead, DeadLetter), dead
    assert dead.reason == reason and dead.origin == ORIGIN


def test_the_future_bound_is_inclusive():
    assert isinstance(decoded(change(occurred_at=NOW + S.max_future)), CatalogChange)


@pytest.mark.parametrize("raw, reason", [
    (b"", R_EMPTY),
    (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", R_DECODE),
    (encode_change(change())[:-3], R_DECODE),
    (encode_change(change()) + b"\x00", R_SCHEMA),
    (confluent_frame(1, encode_change(change())), R_SCHEMA),
    (b"\x00\x00\x00", R_DECODE),
    (struct.pack(">d", 1.5) * 3, R_DECODE),
])
def test_garbage_bytes_are_dead_letters(raw, reason):
    dead = decode_change(raw, ORIGIN, S, NOW)
    assert isinstance(dead, DeadLetter)
    assert dead.reason == reason, dead.error


def test_json_round_trip_and_replay_file(tmp_path):
    c = change()
    line = change_to_json(c)
    assert change_from_json(json.loads(json.dumps(line))) == change()
    path = tmp_path / "items.jsonl"
    bad_price = {**line, "change_id": "ch2", "price": -1}
    no_product = {k: v for k, v in line.items() if k != "product_id"}
    unknown = {**line, "discount": 3}
    path.write_text("\n".join(json.dumps(d) for d in (line, bad_price, no_product, unknown)))
    items = list(read_events_jsonl(path, core=S))
    assert isinstance(items[0], CatalogChange) and items[0].origin == Origin(str(path), -1, 1)
    assert [d.reason for d in items[1:]] == [R_INVALID, R_MISSING, R_INVALID]
