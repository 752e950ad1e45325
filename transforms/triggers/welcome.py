"""Welcome (DESIGN.md section 10): the customer's first email consent grant or first sign-up.

Armed by either; fires `welcome_delay` later (so a consent arriving just after a sign-up is
there), once per customer:

    consent grant   the held email consent changes to granted (the core calls on_consent): by
                    a consent event, or by a profile that turns a held revocation into a grant.
                    A profile that is the first consent statement the job holds counts only with
                    `welcome_on_profile` (default off: a CRM snapshot of a long-known customer
                    is no first consent, and on a job's first start every known customer would
                    be welcomed).
    sign-up         a page_view whose properties[welcome_signup_property] is
                    welcome_signup_value: a convention of the free-form properties map, not a new
                    symbol of the Avro enum EventType (readers of the old schema would fail on it).

An arm is timed from the later of its own time and the customer's last touch (a late consent
arms from the newest thing processed of this customer, not from its own past time). A second arm
while armed keeps the first deadline. At the deadline it fires if the customer holds email
consent; without it the arm is dropped, and a later grant arms again (a sign-up is welcomed when
consent follows). A fire sets the welcomed mark whatever the policy then decides (as browse
intensity's cooldown); while the mark is held nothing arms again.

Key: "signup" or "consent" (what armed it); no evidence.
Slot: (due, welcomed_at, key): the armed deadline or None, the fire time or None. The mark lives
as long as the profile: it is dropped once the profile and consent are gone and profile_ttl has
passed since the customer's last touch (transforms/state.py last_touch). A customer forgotten
that way is new to the job when seen again: a new grant or sign-up welcomes them again.
"""

from __future__ import annotations

from transforms.model import PAGE_VIEW, BehaviourEvent, FiredTrigger
from transforms.settings import CoreSettings
from transforms.state import CustomerState, last_touch

TYPE = "welcome"
SIGNUP = "signup"
CONSENT = "consent"

Slot = tuple[int | None, int | None, str]


class Welcome:
    """Fires `welcome_delay` after the first consent grant or sign-up, once per customer."""

    type = TYPE
    has_deadline = True
    event_types = frozenset({PAGE_VIEW})

    def __init__(self, settings: CoreSettings) -> None:
        self.enabled = settings.welcome_enabled
        self.delay = settings.welcome_delay
        self.on_profile = settings.welcome_on_profile
        self.ttl = settings.profile_ttl
        self.prop = settings.welcome_signup_property
        self.value = settings.welcome_signup_value

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """A sign-up page view arms it."""
        props = event.properties
        if props and props.get(self.prop) == self.value:
            self._arm(state, event.occurred_at, SIGNUP)
        return []

    def on_consent(self, state: CustomerState, at: int, first_profile: bool) -> None:
        """The held email consent just became granted (see the module docstring)."""
        if first_profile and not self.on_profile:
            return
        self._arm(state, at, CONSENT)

    def _arm(self, state: CustomerState, at: int, key: str) -> None:
        if state.triggers.get(TYPE) is not None:  # armed, or welcomed already
            return
        # Not processed_until: how often an engine's timers fired must not change the time.
        now = max(at, last_touch(state) or at)
        state.triggers[TYPE] = (now + self.delay, None, key)

    def deadline(self, state: CustomerState) -> int | None:
        """The armed deadline."""
        slot: Slot | None = state.triggers.get(TYPE)
        return None if slot is None else slot[0]

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """Fire if the customer holds email consent, and keep the welcomed mark."""
        slot: Slot = state.triggers[TYPE]
        if not state.has_consent():
            del state.triggers[TYPE]
            return []
        state.triggers[TYPE] = (None, t, slot[2])
        return [FiredTrigger(type=TYPE, key=slot[2], fired_at=t, evidence=[])]

    def expires_at(self, state: CustomerState) -> int | None:
        """The deadline when armed; the mark's end when welcomed."""
        slot: Slot | None = state.triggers.get(TYPE)
        if slot is None:
            return None
        if slot[0] is not None:
            return slot[0]
        welcomed = slot[1] or 0
        return max(welcomed, last_touch(state) or welcomed) + self.ttl

    def purge(self, state: CustomerState, now: int) -> None:
        """Drop the welcomed mark once the profile it stands beside is gone."""
        slot: Slot | None = state.triggers.get(TYPE)
        if slot is None or slot[0] is not None:
            return
        if state.profile is None and state.consent is None:
            end = self.expires_at(state)
            if end is not None and end <= now:
                del state.triggers[TYPE]


TRIGGER = Welcome
