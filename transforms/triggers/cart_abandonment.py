"""Cart abandonment (DESIGN.md section 4).

Each cart change at t arms the deadline t + cart_delay. When event time reaches the deadline
with no cart change or purchase in between and the cart is not empty, the trigger fires at
exactly the deadline, with the cart's product ids (sorted) as evidence. A cart change or
purchase at exactly the deadline counts as "in between": the core applies all events at an
instant before deadlines at that instant, so such a change re-arms (or a purchase disarms)
first. It fires once per cart state; the next cart change re-arms it.

Key: a stable id of the cart state that armed it (SHA-1 of its sorted product:qty lines).
Slot: the armed deadline (int) or None.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from transforms.model import CART_CHANGES, PURCHASE, BehaviourEvent, FiredTrigger
from transforms.settings import CoreSettings
from transforms.state import CustomerState

TYPE = "cart_abandonment"


def cart_key(cart: Mapping[str, tuple[int, object, str]]) -> str:
    """A stable id of a cart's content."""
    canonical = "|".join(f"{pid}:{cart[pid][0]}" for pid in sorted(cart))
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


class CartAbandonment:
    """Fires `cart_delay` after the last cart change of a non-empty, unpurchased cart."""

    type = TYPE
    has_deadline = True
    event_types = CART_CHANGES | {PURCHASE}

    def __init__(self, settings: CoreSettings) -> None:
        self.delay = settings.cart_delay

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """Arm on cart changes, disarm on purchase (the core has updated the cart already)."""
        if event.event_type in CART_CHANGES:
            state.triggers[TYPE] = event.occurred_at + self.delay
        elif event.event_type == PURCHASE:
            state.triggers.pop(TYPE, None)
        return []

    def deadline(self, state: CustomerState) -> int | None:
        """The armed deadline."""
        deadline: int | None = state.triggers.get(TYPE)
        return deadline

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """Fire with the cart as evidence when it is still not empty."""
        del state.triggers[TYPE]
        cart = state.cart
        if not cart:
            return []
        return [
            FiredTrigger(
                type=TYPE,
                key=cart_key(cart),
                fired_at=t,
                evidence=sorted(cart),
                source_event_ids=sorted(entry[2] for entry in cart.values()),
            )
        ]

    def expires_at(self, state: CustomerState) -> int | None:
        """The slot lives until its deadline fires."""
        return self.deadline(state)

    def purge(self, state: CustomerState, now: int) -> None:
        """Nothing to purge: the deadline always fires."""


TRIGGER = CartAbandonment
