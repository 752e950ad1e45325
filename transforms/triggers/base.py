"""The shape of a trigger: pure functions of the customer's state and time.

A trigger keeps its own slot of per-customer state (`state.triggers[trigger.type]`) and sees
the customer's shared state (cart, recent items) read-only. Without a slot it has no deadline
(the core does not ask it). The core calls, in event-time
order:

    on_event(state, event) -> list[FiredTrigger | str]
                                                    every processed behaviour event: its
                                                    fires, and one `evicted:<part>` reason per
                                                    entry the slot evicted beyond its size caps
                                                    (DESIGN.md section 8, transforms/bounds.py)
    deadline(state) -> int | None                   its next timer, if any
    on_deadline(state, t) -> list[FiredTrigger]     when event time reaches that deadline
    expires_at(state) -> int | None                 when its slot may be dropped
    purge(state, now)                                drop what no rule can use any more

Optional: `event_types` (a frozenset): the only event types on_event needs to see (the core
calls it for no other; absent: every type), and `on_consent(state, at, first_profile)`: the
held email consent has just changed to granted, as of `at`, by a consent event or a profile
(late ones included); `first_profile` when it is a profile's and no consent was held before;
`products(state) -> {product_id: Product}`: products its fires are about, as its slot describes
them (the core adds them to the payload request's known products).
Priority is a setting (core.trigger_priority, see transforms/triggers/__init__.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from transforms.model import BehaviourEvent, FiredTrigger

if TYPE_CHECKING:
    from transforms.state import CustomerState


class Trigger(Protocol):
    """A behaviour trigger (see module docstring)."""

    type: str
    has_deadline: bool   # False: deadline() is always None (the core skips polling it)

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """Fires caused by this event (processed at its occurred_at), and eviction reasons."""
        ...

    def deadline(self, state: CustomerState) -> int | None:
        """The next event time at which `on_deadline` must be called, if any."""
        ...

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """Fires when event time reaches `t` (== the deadline), after the events at t."""
        ...

    def expires_at(self, state: CustomerState) -> int | None:
        """When this trigger's slot holds nothing any rule can use (None: holds nothing)."""
        ...

    def purge(self, state: CustomerState, now: int) -> None:
        """Drop what has expired by `now`; leave the slot None when empty."""
        ...
