"""Email-engagement follow-up (DESIGN.md section 10): an email click without a site visit.

An email_click at t arms the deadline t + `followup_window`. A site visit (product_view,
page_view, add_to_cart, remove_from_cart, purchase) processed after the click and at or before
the deadline cancels it: the core applies the events of an instant before its deadlines, so a
visit at exactly the deadline cancels (as a cart change does for cart abandonment). A visit at
the click's own instant counts when it is processed after the click (event_id order). When
event time reaches the deadline uncancelled, it fires at exactly the deadline. A later click
re-arms it from that click (one follow-up per unanswered click; the contact policy caps the
rest); email opens neither arm nor cancel.

Key: the clicked email's message id (the click's event id when it has none). Evidence: none;
the click's event id is the source event.
Slot: (deadline, key, click event id), or None: it lives until its deadline fires or a visit
cancels it.
"""

from __future__ import annotations

from transforms.model import (
    ADD_TO_CART,
    EMAIL_CLICK,
    PAGE_VIEW,
    PRODUCT_VIEW,
    PURCHASE,
    REMOVE_FROM_CART,
    BehaviourEvent,
    FiredTrigger,
)
from transforms.settings import CoreSettings
from transforms.state import CustomerState

TYPE = "engagement_followup"
VISITS = frozenset({PRODUCT_VIEW, PAGE_VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE})

Slot = tuple[int, str, str]


class EngagementFollowup:
    """Fires `followup_window` after an email click with no site visit since."""

    type = TYPE
    has_deadline = True
    event_types = VISITS | {EMAIL_CLICK}

    def __init__(self, settings: CoreSettings) -> None:
        self.enabled = settings.followup_enabled
        self.window = settings.followup_window

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """A click arms (or re-arms); a visit cancels."""
        if event.event_type == EMAIL_CLICK:
            key = event.email_message_id or event.event_id
            state.triggers[TYPE] = (event.occurred_at + self.window, key, event.event_id)
        elif TYPE in state.triggers:
            del state.triggers[TYPE]
        return []

    def deadline(self, state: CustomerState) -> int | None:
        """The armed deadline."""
        slot: Slot | None = state.triggers.get(TYPE)
        return None if slot is None else slot[0]

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """No visit since the click: fire."""
        _, key, click = state.triggers.pop(TYPE)
        return [FiredTrigger(type=TYPE, key=key, fired_at=t, evidence=[], source_event_ids=[click])]

    def expires_at(self, state: CustomerState) -> int | None:
        """The slot lives until its deadline fires."""
        return self.deadline(state)

    def purge(self, state: CustomerState, now: int) -> None:
        """Nothing to purge: the deadline always fires."""


TRIGGER = EngagementFollowup
