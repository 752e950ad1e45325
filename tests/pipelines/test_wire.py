"""The engine glue's decode step on hostile Kafka values (what both engines call)."""

from __future__ import annotations

import pytest

from pipelines import wire
from transforms.model import R_EMPTY, DeadLetter, Origin
from transforms.settings import CoreSettings


@pytest.mark.parametrize("source", [wire.EVENTS, wire.PROFILES])
@pytest.mark.parametrize("value", [None, b"", bytearray()], ids=["null", "empty", "bytearray"])
def test_a_tombstone_is_an_empty_dead_letter(source: str, value: bytes | None) -> None:
    dead = wire.decode(source, value, "behaviour-events", 3, 42, CoreSettings(), 7)
    assert isinstance(dead, DeadLetter)
    assert (dead.reason, dead.raw, dead.origin) == (R_EMPTY, b"", Origin("behaviour-events", 3, 42))
    assert (dead.raw_length, dead.received_at) == (0, 7)
    key, value_bytes = wire.dead_letter_record(dead)
    assert key == b"behaviour-events" and value_bytes


def test_the_event_time_of_a_tombstone_is_unknown() -> None:
    assert wire.event_time_of(wire.EVENTS, b"", CoreSettings()) is None
