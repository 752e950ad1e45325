"""A minimal in-test driver of the core: step everything, then let event time reach `until`."""

from __future__ import annotations

from collections.abc import Iterable

from transforms.core import Core
from transforms.model import AUDIT, CONSENT_CHANGE, PAYLOAD, Item, Output
from transforms.state import CustomerState


def drive(
    core: Core, items: Iterable[Item], until: int, state: CustomerState | None = None
) -> tuple[CustomerState | None, list[Output]]:
    """Buffer `items` (arrival order, no watermark), then wake at `until`; payload requests
    composed into payloads, as every runner does."""
    outputs: list[Output] = []
    for item in items:
        state, out, _ = core.step(state, item)
        outputs += out
    state, out, _ = core.wake(state, until)
    return state, [
        (PAYLOAD, core.compose(record)) if kind == PAYLOAD else (kind, record)
        for kind, record in outputs + out
    ]


def decisions(outputs: list[Output]) -> list[tuple[str, str, int, str]]:
    """(type, key, fired_at, decision) of every audit record but consent changes (see
    consent_audit), in output order."""
    return [
        (a.type, a.key, a.fired_at, a.decision)
        for kind, a in outputs
        if kind == AUDIT and a.type != CONSENT_CHANGE
    ]


def consent_audit(outputs: list[Output]) -> list[tuple[str, int, str]]:
    """(key, time, decision) of every consent-change audit record, in output order."""
    return [
        (a.key, a.fired_at, a.decision)
        for kind, a in outputs
        if kind == AUDIT and a.type == CONSENT_CHANGE
    ]


def payloads(outputs: list[Output]) -> list:
    return [p for kind, p in outputs if kind == PAYLOAD]
