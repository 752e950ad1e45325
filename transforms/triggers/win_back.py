"""Win-back (DESIGN.md section 10): no activity for `win_back_delay` (30 d) after a purchase.

A purchase arms it; while armed, every behaviour event but a consent change (views, cart,
purchases, email opens and clicks: the customer is active) moves the deadline to that event's
time + win_back_delay. When event time reaches the deadline with no activity in between, it
fires at exactly the deadline, once per lapse: the fire disarms it, and only a new purchase
arms it again (a customer who comes back without buying is not won back twice). An event at
exactly the deadline counts as activity (events of an instant are applied before deadlines).

Long timer, bounded state: the slot is one int, the last activity time (armed = it exists, i.e.
the customer bought since the last fire), nothing of the windows. The core keeps the profile and
consent while a deadline is armed (transforms/core.py _purge), so the fire at 30 d finds them
even when profile_ttl is shorter than win_back_delay.

Key: the last activity time (ms, decimal). Evidence: none (purchases older than 30 d are no
longer held: the recommendations fall back to popularity).
Slot: last activity (int), or None; it lives until its deadline fires.
"""

from __future__ import annotations

from transforms.model import (
    CONSENT_CHANGE,
    CUSTOMER_ERASURE,
    EVENT_TYPES,
    PURCHASE,
    BehaviourEvent,
    FiredTrigger,
)
from transforms.settings import CoreSettings
from transforms.state import CustomerState

TYPE = "win_back"


class WinBack:
    """Fires `win_back_delay` after the last activity of a customer who bought."""

    type = TYPE
    has_deadline = True
    event_types = frozenset(EVENT_TYPES) - {CONSENT_CHANGE, CUSTOMER_ERASURE}

    def __init__(self, settings: CoreSettings) -> None:
        self.enabled = settings.win_back_enabled
        self.delay = settings.win_back_delay

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """A purchase arms; any activity while armed moves the deadline."""
        triggers = state.triggers
        if event.event_type == PURCHASE or TYPE in triggers:
            triggers[TYPE] = event.occurred_at
        return []

    def deadline(self, state: CustomerState) -> int | None:
        """Last activity + win_back_delay, when armed."""
        last: int | None = state.triggers.get(TYPE)
        return None if last is None else last + self.delay

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """The lapse: fire once and disarm."""
        last = state.triggers.pop(TYPE)
        return [FiredTrigger(type=TYPE, key=str(last), fired_at=t, evidence=[])]

    def expires_at(self, state: CustomerState) -> int | None:
        """The slot lives until its deadline fires."""
        return self.deadline(state)

    def purge(self, state: CustomerState, now: int) -> None:
        """Nothing to purge: the deadline always fires."""


TRIGGER = WinBack
