"""Engine-independent glue shared by the Beam and Flink topologies (and the runners).

Both topologies are the same four stages; only the plumbing differs per engine:

    decode      (source, raw bytes, topic, partition, offset) -> Item | DeadLetter
    key         Item -> customer_id
    core        KeyedCore: the core's step/wake with the outputs split by sink
    encode      Sink records -> (key, value, headers) bytes for Kafka

No business rule lives here: it is decoding, routing and encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from transforms.catalog_changes import (
    CatalogChange,
    decode_change,
    encode_change,
    refused_change,
)
from transforms.codec import (
    decode_event,
    decode_profile,
    encode_dead_letter,
    encode_event,
    encode_outcome,
    encode_payload,
    encode_profile,
)
from transforms.core import Core
from transforms.jsonl import dumps, to_json
from transforms.model import (
    AUDIT,
    CONSENT,
    DEAD_LETTER,
    DROPPED,
    ERASE,
    FEATURES,
    OUTCOME,
    PAYLOAD,
    R_FUTURE,
    AuditRecord,
    BehaviourEvent,
    DeadLetter,
    EmailPayload,
    Item,
    Origin,
    Outcome,
    Output,
    PayloadRequest,
    event_time,
)
from transforms.settings import CoreSettings
from transforms.sizes import dead_letter
from transforms.state import CustomerState, step_change

EVENTS = "events"
PROFILES = "profiles"
CHANGES = "catalog_changes"  # catalog changes (transforms/catalog_changes.py): the product stage

# Sinks of the topology; FEATURES carries snapshots, erasures and consent changes for the
# feature store.
SINKS = (PAYLOAD, AUDIT, DEAD_LETTER, FEATURES, OUTCOME)
MESSAGE_ID_HEADER = "message_id"

Routed = list[tuple[str, Any]]


def decode(
    source: str,
    raw: bytes | bytearray | None,
    topic: str,
    partition: int,
    offset: int,
    settings: CoreSettings,
    received_at: int,
) -> Item | DeadLetter:
    """Raw bytes of the events or profiles source, read at wall clock `received_at` (which
    bounds future timestamps) -> an input item, or a dead letter (a null value, a Kafka
    tombstone, is one with reason `empty`)."""
    origin = Origin(topic, partition, offset)
    raw = b"" if raw is None else bytes(raw)
    if source == PROFILES:
        return decode_profile(raw, origin, settings, received_at)
    if source == CHANGES:
        return decode_change(raw, origin, settings, received_at)  # type: ignore[return-value]
    return decode_event(raw, origin, received_at, settings, received_at)


def admit(item: Any, settings: CoreSettings, now: int) -> Any:
    """An input item against the wall clock at its receipt: one more than max_future ahead of
    it is a dead letter (`future_timestamp`), checked before it can move the clock
    (transforms/clock.py). decode() applies the same bound to events; this also covers
    profiles, and items read from files (decoded and validated without a clock). With
    core.catalog_signals false a catalog change is a dead letter `catalog_signals_off`."""
    if isinstance(item, CatalogChange) and not settings.catalog_signals:
        return refused_change(item, settings, now)
    t = item.occurred_at if isinstance(item, CatalogChange) else event_time(item)
    if t <= now + settings.max_future:
        return item
    if isinstance(item, CatalogChange):
        raw = encode_change(item)
    else:
        raw = encode_event(item) if isinstance(item, BehaviourEvent) else encode_profile(item)
    return dead_letter(
        raw,
        item.origin or Origin("unknown"),
        R_FUTURE,
        f"event time {t} is {t - now} ms ahead of the wall clock",
        now,
        settings,
    )


def replayed(item: Any, settings: CoreSettings) -> Any:
    """A replay file's item as every runner takes it: with core.catalog_signals false a
    catalog change is a dead letter `catalog_signals_off` before it reaches a stage or the
    clock, as the file's bad lines (received_at 0: a file has no receipt time)."""
    if isinstance(item, CatalogChange) and not settings.catalog_signals:
        return refused_change(item, settings, 0)
    return item


def event_time_of(source: str, raw: bytes, settings: CoreSettings) -> int | None:
    """The event time of a raw record, or None if it cannot be read; for source watermarks.

    Events are not decoded: occurred_at is the fourth field of the Avro record, after two
    strings and an enum, so it is read straight from the bytes (schemaless or Confluent-framed).
    Profiles carry updated_at last and are rare: they are decoded. What decode() later rejects
    for another reason may still have a readable time here.
    """
    if source == PROFILES:
        profile = decode_profile(raw, _PEEK, settings, 0)
        return None if isinstance(profile, DeadLetter) else profile.updated_at
    if source == CHANGES:
        change = decode_change(raw, _PEEK, settings, None)
        return None if isinstance(change, DeadLetter) else change.occurred_at
    pos = 5 if raw[:1] == b"\x00" else 0
    try:
        for _ in range(2):  # event_id, customer_id: length, then bytes
            length, pos = _zigzag(raw, pos)
            if length < 0:
                return None
            pos += length
        _, pos = _zigzag(raw, pos)  # event_type: the enum's index
        t, pos = _zigzag(raw, pos)  # occurred_at: long (timestamp-millis)
    except IndexError:
        return None
    return t if pos <= len(raw) else None


_PEEK = Origin("peek")


def _zigzag(raw: bytes, pos: int) -> tuple[int, int]:
    """An Avro int/long (zig-zag varint) at pos -> (value, next pos); IndexError past the end."""
    shift = n = 0
    while True:
        b = raw[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def route(
    outputs: Iterable[Output], compose: Callable[[PayloadRequest], EmailPayload]
) -> tuple[Routed, dict[str, int]]:
    """The core's outputs split into sink records and counters (dropped items by reason);
    payload requests composed into payloads."""
    routed: Routed = []
    counts: dict[str, int] = {}
    for kind, record in outputs:
        if kind == PAYLOAD:
            routed.append((PAYLOAD, compose(record)))
        elif kind == DROPPED:
            counts[record] = counts.get(record, 0) + 1
        elif kind == ERASE or kind == CONSENT:
            routed.append((FEATURES, (kind, record)))
        elif kind == FEATURES:
            routed.append((FEATURES, (FEATURES, record)))
        else:
            routed.append((kind, record))
    return routed, counts


class KeyedCore:
    """The core behind an engine's keyed operator: state in, state out, outputs routed.

    With `compose` False, PAYLOAD records are the core's PayloadRequests, for a compose stage
    of their own after the keyed one (`Core.compose`); else they are composed here.
    """

    def __init__(self, core: Core, compose: bool = True) -> None:
        self.core = core
        self.compose: Callable[[Any], Any] = core.compose if compose else _as_is

    def step(
        self, state: CustomerState | None, item: Item, watermark: int | None
    ) -> tuple[CustomerState | None, Routed, dict[str, int], list[int]]:
        """One input item of this key."""
        state, outputs, wake_at = self.core.step(state, item, watermark)
        routed, counts = route(outputs, self.compose)
        return state, routed, counts, wake_at

    def step_split(
        self, state: CustomerState | None, item: Item, watermark: int | None
    ) -> tuple[CustomerState | None, Routed, dict[str, int], list[int], int]:
        """`step`, and what it did to the state (state.step_change: UNCHANGED, BUFFERED,
        CHANGED), for an engine that writes only that."""
        held = None if state is None else len(state.pending)
        state, outputs, wake_at = self.core.step(state, item, watermark)
        change = step_change(held, state, outputs, wake_at, self.core.buffered_wake)
        routed, counts = route(outputs, self.compose)
        return state, routed, counts, wake_at, change

    def wake(
        self, state: CustomerState | None, t: int
    ) -> tuple[CustomerState | None, Routed, dict[str, int], list[int]]:
        """Event time reached t for this key."""
        state, outputs, wake_at = self.core.wake(state, t)
        routed, counts = route(outputs, self.compose)
        return state, routed, counts, wake_at


def _as_is(record: Any) -> Any:
    return record


def payload_record(payload: EmailPayload) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Kafka (key, value, headers) of a payload: keyed by customer, message_id in a header."""
    return (
        payload.customer_id.encode(),
        encode_payload(payload),
        [(MESSAGE_ID_HEADER, payload.message_id.encode())],
    )


def audit_record(audit: AuditRecord) -> tuple[bytes, bytes]:
    """Kafka (key, value) of an audit decision: JSON, keyed by customer."""
    return audit.customer_id.encode(), dumps(to_json(audit)).encode()


def dead_letter_record(dead: DeadLetter) -> tuple[bytes | None, bytes]:
    """Kafka (key, value) of a dead letter: Avro, keyed by its origin topic."""
    return dead.origin.topic.encode(), encode_dead_letter(dead)


def outcome_record(outcome: Outcome) -> tuple[bytes, bytes]:
    """Kafka (key, value) of an attributed outcome: Avro (avro_schemas/outcome.avsc), keyed by
    customer."""
    return outcome.customer_id.encode(), encode_outcome(outcome)
