"""Catalog changes (price, stock) and the signals the product stage derives from them.

    CatalogChange    a product's new price and / or stock state at occurred_at (Avro
                     avro_schemas/catalog_change.avsc, topic kafka.catalog_changes_topic)
    CatalogSignal    one interested customer told of a price drop or a restock: an input item
                     of the customer-keyed core (transforms/core.py), made by
                     transforms/product_stage.py
    decode_change(bytes, Origin, CoreSettings, received_at) -> CatalogChange | DeadLetter
    encode_change(CatalogChange) -> bytes
    validate_change(CatalogChange, CoreSettings, received_at | None) -> (reason, message) | None
    change_to_json / change_from_json      the JSONL form ({"kind": "catalog_change", ...})
    refused_change(CatalogChange, CoreSettings, received_at) -> DeadLetter
                     a change a job without the product stage (core.catalog_signals false)
                     was given: dead letter `catalog_signals_off`

Validation (first failure reported, reasons of transforms/model.py): `change_id` and
`product_id` non-empty [missing_field]; strings within `max_string_length` [oversized_field];
`occurred_at` within [1970, 2100), a price finite and >= 0, at least one of price and in_stock
stated [invalid_value]; not more than `max_future` ahead of the wall clock at receipt, when
known [future_timestamp]. The decoder never raises: bad bytes are dead letters, as for events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from transforms.codec import _read, _write, parsed_schema
from transforms.model import (
    R_FUTURE,
    R_INVALID,
    R_MISSING,
    R_OVERSIZED,
    Compact,
    DeadLetter,
    Origin,
)
from transforms.settings import CoreSettings
from transforms.sizes import dead_letter
from transforms.validate import MAX_TIMESTAMP

CHANGE: Final = "catalog_change"
KIND_CHANGE: Final = "catalog_change"  # the JSONL kind of a change in a replay file
# Signal kinds: the trigger types they feed (transforms/triggers/price_drop.py, back_in_stock.py).
PRICE_DROP: Final = "price_drop"
BACK_IN_STOCK: Final = "back_in_stock"
SIGNAL_TYPES: Final = frozenset({PRICE_DROP, BACK_IN_STOCK})
# The dead-letter reason of a change given to a job whose product stage is off.
R_SIGNALS_OFF: Final = "catalog_signals_off"

_SCHEMA: Final = parsed_schema(CHANGE)
_FLOAT_MAX = 1.7976931348623157e308


@dataclass(slots=True)
class CatalogChange(Compact):
    """A product's new price and / or stock state (None: not stated by this change)."""

    change_id: str
    product_id: str
    occurred_at: int
    price: float | None = None
    in_stock: bool | None = None
    category: str | None = None
    brand: str | None = None
    name: str | None = None
    origin: Origin | None = None  # runtime only: where the decoder found it


@dataclass(slots=True)
class CatalogSignal(Compact):
    """A price drop or restock of `product_id` for one customer who showed interest in it at
    `interest_at` (a view or cart add, not bought since as the product stage saw it).

    Shaped like an event where the core needs it (event_id for dedup, event_type, occurred_at
    = the change's time); never on a topic of its own."""

    event_id: str
    customer_id: str
    event_type: str          # PRICE_DROP or BACK_IN_STOCK
    occurred_at: int
    product_id: str
    change_id: str
    interest_at: int
    old_price: float | None = None
    new_price: float | None = None
    category: str | None = None
    origin: Origin | None = None  # always None: a signal has no raw form


# ------------------------------------------------------------------------------ validation


def validate_change(
    c: CatalogChange, core: CoreSettings, received_at: int | None
) -> tuple[str, str] | None:
    """Why `c` cannot be used, or None (see the module docstring)."""
    if not isinstance(c.change_id, str) or not c.change_id:
        return R_MISSING, "change_id is empty"
    if not isinstance(c.product_id, str) or not c.product_id:
        return R_MISSING, "product_id is empty"
    limit = core.max_string_length
    for name in ("change_id", "product_id", "category", "brand", "name"):
        value = getattr(c, name)
        if value is not None and len(value) > limit:
            return R_OVERSIZED, f"{name} is longer than {limit} characters"
    t = c.occurred_at
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < MAX_TIMESTAMP:
        return R_INVALID, f"occurred_at {t!r} is outside [1970, 2100)"
    price = c.price
    if price is not None and not (
        isinstance(price, float | int) and not isinstance(price, bool) and 0 <= price <= _FLOAT_MAX
    ):
        return R_INVALID, f"price {price!r} is not a finite non-negative number"
    if c.in_stock is not None and not isinstance(c.in_stock, bool):
        return R_INVALID, f"in_stock {c.in_stock!r} is not a boolean"
    if price is None and c.in_stock is None:
        return R_INVALID, "the change states neither a price nor a stock state"
    if received_at is not None and t > received_at + core.max_future:
        return R_FUTURE, f"occurred_at {t} is {t - received_at} ms ahead of the wall clock"
    return None


# ------------------------------------------------------------------------------ Avro


def decode_change(
    raw: bytes, origin: Origin, core: CoreSettings, received_at: int | None
) -> CatalogChange | DeadLetter:
    """Bytes of a catalog change (schemaless Avro) -> the validated change, or a dead letter;
    `received_at` (None: unknown) bounds its time from above (max_future)."""
    r = _read(raw, CHANGE, _SCHEMA)
    if type(r) is tuple:
        return dead_letter(raw, origin, r[0], r[1], received_at or 0, core)
    change = CatalogChange(
        r["change_id"], r["product_id"], r["occurred_at"], r["price"], r["in_stock"],
        r["category"], r["brand"], r["name"], origin,
    )
    problem = validate_change(change, core, received_at)
    if problem is not None:
        return dead_letter(raw, origin, problem[0], problem[1], received_at or 0, core)
    return change


def refused_change(c: CatalogChange, core: CoreSettings, received_at: int) -> DeadLetter:
    """A change that reached a job with core.catalog_signals false: a dead letter, not lost
    in silence (its bytes re-encoded, as for the other dead letters of decoded items)."""
    return dead_letter(encode_change(c), c.origin or Origin("unknown"), R_SIGNALS_OFF,
                       f"catalog change of product {c.product_id!r} not taken: "
                       "core.catalog_signals is false (no product stage)", received_at, core)


def encode_change(c: CatalogChange) -> bytes:
    """A catalog change -> schemaless Avro (origin is runtime only and not written)."""
    return _write(_SCHEMA, {
        "change_id": c.change_id, "product_id": c.product_id, "occurred_at": c.occurred_at,
        "price": c.price, "in_stock": c.in_stock, "category": c.category, "brand": c.brand,
        "name": c.name,
    })


# ------------------------------------------------------------------------------ JSON

_FIELDS: Final = ("change_id", "product_id", "occurred_at", "price", "in_stock", "category",
                  "brand", "name")
_KEYS: Final = frozenset(_FIELDS) | {"kind"}


def change_to_json(c: CatalogChange) -> dict[str, Any]:
    """The JSON form of a change (a replay file's line, with "kind")."""
    return {"kind": KIND_CHANGE, **{name: getattr(c, name) for name in _FIELDS}}


def change_from_json(d: dict[str, Any]) -> CatalogChange:
    """A change from its JSON form; KeyError (a required field), TypeError / ValueError (a
    wrong type, an unknown field) as transforms/jsonl.py's readers."""
    from transforms.jsonl import _bool, _check_keys, _float, _int, _str

    _check_keys(d, _KEYS, "catalog change")
    return CatalogChange(
        change_id=_str(d, "change_id", True),
        product_id=_str(d, "product_id", True),
        occurred_at=_int(d, "occurred_at", True),
        price=_float(d, "price"),
        in_stock=_bool(d, "in_stock"),
        category=_str(d, "category"),
        brand=_str(d, "brand"),
        name=_str(d, "name"),
    )
