"""Readers that turn clickstream files into the job's input items (events, profiles, dead letters).

rees46 CSV (the public "eCommerce behavior data from multi category store" dataset):

    event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
    -> BehaviourEvent(event_id = SHA-1 of the raw line, customer_id = user_id, ...)

Exact duplicate rows hash to the same event_id, so the job's dedup treats them as one event.
With `synthesize_profiles` (with_synthesized_profiles), a customer's first event is preceded by
a CRM profile (`<id>@example.invalid`, email consent granted, UTC) stamped with that event's
time, so replays of data without a CRM still reach the contact policy.

Events JSONL (transforms/jsonl.py): one JSON object per line, {"kind": "event" | "profile", ...}
or a bare event.

Every row is validated (transforms/validate.py) with no watermark (a file has none; lateness is
the runner's business); a row that fails to parse or validate (JSON nested too deep included)
becomes a DeadLetter whose origin is (file path, -1, 1-based line number) and whose raw bytes
are the line (at most a prefix: transforms/sizes.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from transforms.catalog_changes import CatalogChange, validate_change
from transforms.jsonl import item_from_json
from transforms.model import (
    ADD_TO_CART,
    EMAIL_CHANNEL,
    PRODUCT_VIEW,
    PURCHASE,
    R_DECODE,
    R_INVALID,
    R_MISSING,
    REMOVE_FROM_CART,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    Origin,
    Product,
)
from transforms.settings import CoreSettings
from transforms.sizes import dead_letter
from transforms.validate import validate_event, validate_profile

REES46_COLUMNS = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
REES46_TYPES = {
    "view": PRODUCT_VIEW,
    "cart": ADD_TO_CART,
    "remove_from_cart": REMOVE_FROM_CART,
    "purchase": PURCHASE,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_rees46_time(text: str) -> int:
    """'2019-10-01 00:00:00 UTC' -> epoch milliseconds."""
    if not text.endswith(" UTC"):
        raise ValueError(f"event_time must end in ' UTC': {text!r}")
    dt = datetime.strptime(text[:-4], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH


def rees46_event(line: str, fields: list[str]) -> BehaviourEvent:
    """One parsed CSV row -> a behaviour event; raises ValueError / KeyError on bad rows."""
    if len(fields) != len(REES46_COLUMNS):
        raise ValueError(f"expected {len(REES46_COLUMNS)} columns, got {len(fields)}")
    (event_time, etype, product_id, category_id, category_code, brand, price, user_id, session) = (
        fields
    )
    if not user_id or not product_id:
        raise KeyError("user_id" if not user_id else "product_id")
    event_type = REES46_TYPES.get(etype)
    if event_type is None:
        raise ValueError(f"unknown event_type {etype!r}")
    quantity = None if event_type == PRODUCT_VIEW else 1
    return BehaviourEvent(
        event_id=hashlib.sha1(line.encode()).hexdigest(),
        customer_id=user_id,
        event_type=event_type,
        occurred_at=parse_rees46_time(event_time),
        session_id=session or None,
        product=Product(
            product_id=product_id,
            category=category_code or category_id or None,
            brand=brand or None,
            price=float(price) if price else None,
        ),
        quantity=quantity,
    )


def synthesized_profile(customer_id: str, at: int) -> CustomerProfile:
    """The stand-in CRM profile for data that has none (replays of public clickstreams)."""
    return CustomerProfile(
        customer_id=customer_id,
        updated_at=at,
        email=f"{customer_id}@example.invalid",
        consents={EMAIL_CHANNEL: True},
        time_zone="UTC",
    )


Items = Iterator[BehaviourEvent | CustomerProfile | DeadLetter]
# What replay files (events JSONL) hold: catalog changes too.
ReplayItems = Iterator[BehaviourEvent | CustomerProfile | CatalogChange | DeadLetter]
_T = TypeVar("_T")


def with_synthesized_profiles(items: Iterable[_T]) -> Iterator[_T | CustomerProfile]:
    """`items` with a synthesized profile before the first event of each customer who has had
    no profile yet (customers whose profile comes first keep theirs)."""
    known: set[str] = set()
    for item in items:
        if isinstance(item, BehaviourEvent):
            if item.customer_id not in known:
                known.add(item.customer_id)
                yield synthesized_profile(item.customer_id, item.occurred_at)
        elif isinstance(item, CustomerProfile):
            known.add(item.customer_id)
        yield item


def read_rees46(
    path: str | Path, synthesize_profiles: bool = True, core: CoreSettings | None = None
) -> Items:
    """Items of a rees46 CSV file in file order; bad rows become dead letters (origin = line)."""
    items = _read_rees46(Path(path), core or CoreSettings())
    return with_synthesized_profiles(items) if synthesize_profiles else items


def _read_rees46(path: Path, core: CoreSettings) -> Items:
    topic = str(path)
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        header = fh.readline().rstrip("\r\n")
        if tuple(header.split(",")) != REES46_COLUMNS:
            raise ValueError(f"{path}: not a rees46 CSV (header {header!r})")
        for line_no, raw_line in enumerate(fh, start=2):
            line = raw_line.rstrip("\r\n")
            if not line:
                continue
            origin = Origin(topic, -1, line_no)
            try:
                fields = next(csv.reader([line]))
                event = rees46_event(line, fields)
            except KeyError as exc:
                yield _dead(line, origin, R_MISSING, f"missing {exc.args[0]}", core)
                continue
            except (ValueError, csv.Error, StopIteration) as exc:
                reason = R_INVALID if "event_type" in str(exc) or "price" in str(exc) else R_DECODE
                yield _dead(line, origin, reason, str(exc) or type(exc).__name__, core)
                continue
            problem = validate_event(event, core, None)
            if problem is not None:
                yield _dead(line, origin, *problem, core)
                continue
            event.origin = origin
            yield event


def _dead(line: str, origin: Origin, reason: str, error: str, core: CoreSettings) -> DeadLetter:
    raw = line.encode("utf-8", errors="surrogateescape")
    return dead_letter(raw, origin, reason, error, 0, core)


def read_events_jsonl(
    path: str | Path, synthesize_profiles: bool = False, core: CoreSettings | None = None
) -> ReplayItems:
    """Items of an events JSONL file in file order; bad lines become dead letters (origin: line)."""
    items = _read_events_jsonl(Path(path), core or CoreSettings())
    return with_synthesized_profiles(items) if synthesize_profiles else items


def _read_events_jsonl(path: Path, core: CoreSettings) -> ReplayItems:
    topic = str(path)
    with path.open("rb") as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            raw = raw_line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            origin = Origin(topic, -1, line_no)
            try:
                text = raw.decode("utf-8")
                data = json.loads(text)
                if "\\u" in text:  # escapes may spell lone surrogates, which no sink can encode
                    json.dumps(data, ensure_ascii=False).encode("utf-8")
                item = item_from_json(data)
            except (UnicodeError, json.JSONDecodeError) as exc:
                yield dead_letter(raw, origin, R_DECODE, str(exc)[:200], 0, core)
                continue
            except RecursionError:
                yield dead_letter(raw, origin, R_DECODE, "JSON nested too deep", 0, core)
                continue
            except KeyError as exc:
                yield dead_letter(raw, origin, R_MISSING, f"missing {exc.args[0]}", 0, core)
                continue
            except (TypeError, ValueError) as exc:  # a wrong type, an unknown field or kind
                yield dead_letter(raw, origin, R_INVALID, str(exc)[:200], 0, core)
                continue
            if isinstance(item, BehaviourEvent):
                problem = validate_event(item, core, None)
            elif isinstance(item, CustomerProfile):
                problem = validate_profile(item, core)
            else:
                problem = validate_change(item, core, None)
            if problem is not None:
                yield dead_letter(raw, origin, problem[0], problem[1], 0, core)
                continue
            item.origin = origin
            yield item
