"""Engine-independent glue shared by the Beam and Flink topologies (and the runners).

Both topologies are the same four stages; only the plumbing differs per engine:

    decode      (source, raw bytes, topic, partition, offset) -> Item | DeadLetter
    key         Item -> customer_id
    core        KeyedCore: the core's step/wake with the outputs split by sink
    encode      Sink records -> (key, value, headers) bytes for Kafka

No business rule lives here: it is decoding, routing and encoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transforms.codec import decode_event, decode_profile, encode_dead_letter, encode_payload
from transforms.core import Core
from transforms.jsonl import dumps, to_json
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    DROPPED,
    ERASE,
    FEATURES,
    PAYLOAD,
    AuditRecord,
    DeadLetter,
    EmailPayload,
    Item,
    Origin,
    Output,
)
from transforms.settings import CoreSettings
from transforms.state import CustomerState

EVENTS = "events"
PROFILES = "profiles"

# Sinks of the topology; FEATURES carries both snapshots and erasures for the feature store.
SINKS = (PAYLOAD, AUDIT, DEAD_LETTER, FEATURES)
MESSAGE_ID_HEADER = "message_id"

Routed = list[tuple[str, Any]]


def decode(
    source: str, raw: bytes, topic: str, partition: int, offset: int, watermark: int | None,
    settings: CoreSettings, received_at: int,
) -> Item | DeadLetter:
    """Raw bytes of the events or profiles source -> an input item, or a dead letter."""
    origin = Origin(topic, partition, offset)
    if source == PROFILES:
        return decode_profile(raw, origin, settings, received_at)
    return decode_event(raw, origin, watermark, settings, received_at)


def route(outputs: Iterable[Output]) -> tuple[Routed, dict[str, int]]:
    """The core's outputs split into sink records and counters (dropped items by reason)."""
    routed: Routed = []
    counts: dict[str, int] = {}
    for kind, record in outputs:
        if kind == DROPPED:
            counts[record] = counts.get(record, 0) + 1
        elif kind == ERASE:
            routed.append((FEATURES, (ERASE, record)))
        elif kind == FEATURES:
            routed.append((FEATURES, (FEATURES, record)))
        else:
            routed.append((kind, record))
    return routed, counts


class KeyedCore:
    """The core behind an engine's keyed operator: state in, state out, outputs routed."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def step(
        self, state: CustomerState | None, item: Item, watermark: int | None
    ) -> tuple[CustomerState | None, Routed, dict[str, int], list[int]]:
        """One input item of this key."""
        state, outputs, wake_at = self.core.step(state, item, watermark)
        routed, counts = route(outputs)
        return state, routed, counts, wake_at

    def wake(
        self, state: CustomerState | None, t: int
    ) -> tuple[CustomerState | None, Routed, dict[str, int], list[int]]:
        """Event time reached t for this key."""
        state, outputs, wake_at = self.core.wake(state, t)
        routed, counts = route(outputs)
        return state, routed, counts, wake_at


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
