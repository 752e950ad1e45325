"""A mixed stream of hostile Kafka records for the robustness suite (deterministic from a seed).

    hostile_stream(now_ms, seed) -> [Record]   in production order, each with its Kafka topic
                                                tag, key, value, record timestamp and kind

Valid traffic (the generator's journeys, 3 % duplicates, out of order within 3 s) is mixed with
records that are valid but hostile, and records that must become dead letters:

    valid, hostile      a future-skewed event (290 s ahead, inside max_future), a 2 000-item
                        cart, names with CR/LF and of 2 000 characters, a revocation 15 s behind
                        its partition, an upper-case consent channel, a customer with 1 500
                        views in a day and one with 600 categories
    invalid             garbage and empty bytes, tombstones (null values), truncated and
                        bit-flipped encodings, an int beyond Avro's int range, negative prices,
                        far-future timestamps, empty and oversized ids, a profile on the events
                        topic, garbage on the profiles topic

Record timestamps stand for the time each record reached Kafka: the stream is "live" (every
record arrives about a second after it happened), whenever the test runs. Bit-flipped records
may still decode: `expected_bad` is only set for records that are invalid by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from fastavro import parse_schema, schemaless_writer

from runners.traffic import Malformed, Traffic, TrafficConfig, avro_record
from transforms.codec import _without_logical_types, encode_event, encode_profile, load_contract
from transforms.model import (
    ADD_TO_CART,
    CONSENT_CHANGE,
    PRODUCT_VIEW,
    BehaviourEvent,
    CustomerProfile,
    Product,
)
from transforms.settings import SECOND

EVENTS = "events"
PROFILES = "profiles"
SKEW_MS = 290 * SECOND
RECEIPT_DELAY = SECOND


@dataclass(slots=True)
class Record:
    """One Kafka record to produce: topic tag (events | profiles), key, value (None: a
    tombstone), record timestamp, what it is, and whether it is invalid by construction."""

    source: str
    key: bytes | None
    value: bytes | None
    timestamp: int
    kind: str
    expected_bad: bool


def _long_quantity_schema() -> Any:
    """The event schema with quantity widened to long: writes an int field's out-of-range value
    with exactly the bytes a buggy producer would send (ints and longs share their encoding)."""
    schema = _without_logical_types(load_contract("behaviour_event"))
    for f in schema["fields"]:
        if f["name"] == "quantity":
            f["type"] = ["null", "long"]
    return parse_schema(schema)


def _encode_with_long_quantity(ev: BehaviourEvent, quantity: int) -> bytes:
    from io import BytesIO

    from fastavro import schemaless_reader

    from transforms.codec import parsed_schema

    record = schemaless_reader(BytesIO(encode_event(ev)), parsed_schema("behaviour_event"), None)
    record["quantity"] = quantity
    out = BytesIO()
    schemaless_writer(out, _long_quantity_schema(), record)
    return out.getvalue()


class _Builder:
    def __init__(self, now_ms: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.records: list[Record] = []
        self.clock = now_ms            # the receipt time of the next record
        self.n = 0

    def _eid(self, tag: str) -> str:
        self.n += 1
        return f"hostile-{tag}-{self.n:06d}"

    def add(self, source: str, key: bytes | None, value: bytes | None, kind: str,
            bad: bool, at: int | None = None) -> None:
        if at is not None:
            self.clock = max(self.clock, at + RECEIPT_DELAY)
        self.records.append(Record(source, key, value, self.clock, kind, bad))

    def event(self, ev: BehaviourEvent, kind: str) -> None:
        self.add(EVENTS, ev.customer_id.encode(), encode_event(ev), kind, False, ev.occurred_at)

    def profile(self, p: CustomerProfile, kind: str) -> None:
        self.add(PROFILES, p.customer_id.encode(), encode_profile(p), kind, False, p.updated_at)

    def customer(self, cid: str, at: int, name: str = "Ada") -> None:
        self.profile(CustomerProfile(cid, at, email=f"{cid}@example.com", first_name=name,
                                     consents={"email": True}, time_zone="UTC"), "profile")

    def view(self, cid: str, at: int, pid: str, category: str, kind: str) -> None:
        self.event(BehaviourEvent(self._eid(kind), cid, PRODUCT_VIEW, at, session_id="s",
                                  product=Product(pid, category, "acme", 10.0)), kind)

    def cart(self, cid: str, at: int, pid: str, kind: str) -> BehaviourEvent:
        ev = BehaviourEvent(self._eid(kind), cid, ADD_TO_CART, at, session_id="s",
                            product=Product(pid, "shoes", "acme", 25.0), quantity=1)
        self.event(ev, kind)
        return ev


def hostile_stream(now_ms: int, seed: int = 7, base_events: int = 5_000) -> list[Record]:
    """About 10 000 records (with the default base) whose event times end near `now_ms`."""
    b = _Builder(now_ms, seed)
    rng = b.rng
    span = int(base_events / 20 * SECOND)                 # the generator's rate: 20 events/s
    start = now_ms - span - 10 * 60 * SECOND
    b.clock = start
    traffic = Traffic(TrafficConfig(events=base_events, customers=400, rate=20.0, start=start,
                                    seed=seed, duplicate_ratio=0.03, out_of_order_ms=3 * SECOND,
                                    malformed_ratio=0.03))
    base = list(traffic)
    hostile_at = {len(base) * k // 10: k for k in range(1, 10)}
    for i, item in enumerate(base):
        if i in hostile_at:
            _inject(b, hostile_at[i], rng)
        if isinstance(item, Malformed):
            tag, key, value = avro_record(item)
            b.add(EVENTS, key.encode(), value, f"malformed:{item.flavour}", True,
                  item.event.occurred_at)
        elif isinstance(item, CustomerProfile):
            b.profile(item, "base")
        else:
            b.event(item, "base")
    _revocation(b)
    return b.records


def _inject(b: _Builder, k: int, rng: random.Random) -> None:
    """The k-th burst of hostile records. Their event times lie within the last 8 s before the
    current receipt time, inside max_out_of_orderness: no burst moves a partition's watermark
    past the base traffic still to come (the future-skewed event is bounded by its receipt)."""
    t = b.clock - RECEIPT_DELAY - 8 * SECOND
    if k == 1:
        # One client's clock is 290 s fast: inside max_future, so the event is valid; it must
        # not make the events of other customers behind it late.
        b.customer("hostile-skew", t)
        ev = BehaviourEvent(b._eid("skew"), "hostile-skew", PRODUCT_VIEW, b.clock + SKEW_MS,
                            session_id="s", product=Product("skew-p", "shoes", "acme", 10.0))
        b.add(EVENTS, b"hostile-skew", encode_event(ev), "future_skew", False)
    elif k == 2:
        # A 2 000-item cart: the payload must stay under the output limit.
        b.customer("hostile-cart", t)
        for j in range(2_000):
            b.cart("hostile-cart", t + 1 + j * 3, f"huge-{j:05d}", "huge_cart")
    elif k == 3:
        # Names that must not reach a header raw: CR/LF injection, 2 000 characters.
        for j, name in enumerate(("Eve\r\nBcc: victim@example.com", "N" * 2_000)):
            cid = f"hostile-name-{j}"
            b.customer(cid, t, name=name)
            b.cart(cid, t + SECOND, f"name-p{j}", "hostile_name")
    elif k == 4:
        # A cart whose owner revokes consent at the end of the stream, 30 s behind (see
        # revocation()); and an upper-case channel, which is still the email channel.
        b.customer("hostile-revoke", t)
        b.cart("hostile-revoke", t + SECOND, "revoke-p", "late_revocation")
        b.customer("hostile-upper", t)
        b.cart("hostile-upper", t + SECOND, "upper-p", "upper_channel")
        b.event(BehaviourEvent(b._eid("upper"), "hostile-upper", CONSENT_CHANGE, t + 2 * SECOND,
                               consent_channel="EMAIL", consent_granted=False), "upper_channel")
    elif k == 5:
        # A hot customer (1 500 views) and one with 600 categories.
        b.customer("hostile-hot", t)
        for j in range(1_500):
            b.view("hostile-hot", t + 1 + j * 4, f"hot-{j % 7}", "hot-cat", "hot_customer")
        b.customer("hostile-cats", t)
        for j in range(600):
            b.view("hostile-cats", t + 1 + j * 10, f"cat-p{j}", f"cat-{j:04d}",
                   "many_categories")
    elif k == 6:
        _invalid(b, t, rng)
    elif k == 7:
        _fuzz(b, t, rng, 300)
    elif k == 8:
        # A profile on the events topic and garbage on the profiles topic.
        p = CustomerProfile("hostile-wrong", t, email="w@example.com", consents={"email": True})
        b.add(EVENTS, b"hostile-wrong", encode_profile(p), "wrong_schema", False)
        for j in range(20):
            b.add(PROFILES, f"hostile-pg-{j}".encode(), rng.randbytes(rng.randint(1, 60)),
                  "profile_garbage", False)
    elif k == 9:
        _fuzz(b, t, rng, 300)


def _revocation(b: _Builder) -> None:
    """The revocation of `hostile-revoke`, 30 s behind the stream's end (so behind every busy
    partition's watermark), before its cart's deadline: consent is never late, so the cart's
    abandonment must be suppressed."""
    t = b.clock - RECEIPT_DELAY - 30 * SECOND
    revoke = BehaviourEvent(b._eid("revoke"), "hostile-revoke", CONSENT_CHANGE, t,
                            consent_channel="email", consent_granted=False)
    b.add(EVENTS, b"hostile-revoke", encode_event(revoke), "late_revocation", False)


def _invalid(b: _Builder, t: int, rng: random.Random) -> None:
    cid = "hostile-bad"
    ok = BehaviourEvent("x", cid, ADD_TO_CART, t, session_id="s",
                        product=Product("bad-p", "shoes", "acme", 25.0), quantity=1)
    for j in range(20):
        b.add(EVENTS, cid.encode(), None, "tombstone", True)
        b.add(EVENTS, cid.encode(), b"", "empty", True)
        b.add(EVENTS, cid.encode(),
              _encode_with_long_quantity(replace(ok, event_id=b._eid("q")), 2_147_483_648 + j),
              "int_overflow", True)
        b.add(EVENTS, cid.encode(), encode_event(replace(
            ok, event_id=b._eid("neg"), product=Product("bad-p", "shoes", "acme", -1.0 - j))),
            "negative_price", True)
        b.add(EVENTS, cid.encode(), encode_event(replace(
            ok, event_id=b._eid("far"), occurred_at=t + 86_400 * SECOND)), "far_future", True)
        b.add(EVENTS, cid.encode(), encode_event(replace(ok, event_id="")), "empty_id", True)
        b.add(EVENTS, cid.encode(), encode_event(replace(ok, event_id="E" * 5_000 + str(j))),
              "oversized_id", True)
        # Garbage whose first varint is a negative string length: never an event.
        b.add(EVENTS, cid.encode(), b"\x01" + rng.randbytes(rng.randint(0, 80)), "garbage",
              True)


def _fuzz(b: _Builder, t: int, rng: random.Random, n: int) -> None:
    """Bit-flipped and truncated valid events: some still decode (then they are valid input)."""
    for j in range(n):
        cid = f"hostile-fuzz-{j % 40}"
        raw = bytearray(encode_event(BehaviourEvent(
            b._eid("fuzz"), cid, PRODUCT_VIEW, t + 1 + j, session_id="s",
            product=Product(f"fz-{j}", "fuzz", "acme", 10.0))))
        if j % 3 == 0:
            raw = raw[:rng.randint(1, len(raw) - 1)]
            b.add(EVENTS, cid.encode(), bytes(raw), "truncated", True)
            continue
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        b.add(EVENTS, cid.encode(), bytes(raw), "bit_flip", False)
