"""Per-customer state of the core: everything the rules remember about one customer.

Every part has a time limit (STYLE.md rule 7). Purges run when a wake ends, at times that
differ between engines; what the rules read is also expired by time when it is read
(core.Core._expire, Windows.features, the time filters of _request and policy), so no output
depends on when purges ran.

    pending          items waiting for the watermark          until processed
    seen             event ids, for dedup                     dedup_ttl after occurred_at
    windows          bucketed behaviour counters              30 d (see windows.py)
    cart             product -> (qty, product, event id)      cart_ttl after the last change
    recent_views     last `recent_items` viewed products      24 h
                     (product -> (ts, category, brand, price): plain tuples pickle in C)
    purchased        bought products (never re-recommended)   30 d
    triggers         each trigger's own slot                  the trigger's expires_at:
                     cart_abandonment: deadline               until it fires
                     browse_intensity: views, adds, fires     their windows / cooldown
                     post_purchase: deadline, products        until it fires (+ one purge)
                     win_back: last activity (one int)        until it fires (win_back_delay)
                     welcome: (due, welcomed_at, key)         due; the mark: with the profile
                     engagement_followup: (deadline, key, id) until it fires or a visit
                     price_drop, back_in_stock: product ->    their cooldown
                     last fire (pending may hold catalog
                     signals of the product stage; neither
                     with core.catalog_signals false: the
                     triggers and the product stage and its
                     per-product state do not exist then)
    sent             emitted payloads (fired_at, type)        cap_window
                     (and held-out would-be ones, policy.py)
    messages         sends for attribution (fired_at, id,     attribution_window after fired_at
                     type, holdout)
    profile, consent the CRM profile and email consent        profile_ttl after last touch,
                                                              kept while a deadline is armed
    erased_at        erasure tombstone                        erasure_ttl
    features_due     the next feature-store write              written at that time

Every part that grows with input also has a size cap (DESIGN.md section 8; settings, see
transforms/bounds.py): over it the oldest entries go, each counted as dropped `evicted:<part>`.

    part             cap                  evicted first           what eviction costs
    seen             max_dedup_ids        first seen              a duplicate of an evicted id
                                                                  passes (only ids >= cap ids old)
    pending          max_pending          oldest in event time    none lost: processed at once,
                                                                  before the watermark (in arrival
                                                                  order with this customer's other
                                                                  input); later arrivals behind
                                                                  them are late dead letters
    windows sessions max_sessions         least recently seen     sessions_7d undercounts
    windows views    max_categories       least recently viewed   views_1h / 24h miss the category
    cart             max_cart_lines       first added             the line is forgotten
    purchased        max_purchased        oldest purchase         may be recommended again
    browse views     max_category_views   oldest view             evidence holds the newest views
    browse adds,     max_categories       least recent            the add or the cooldown no
      cooldowns                                                   longer blocks a fire
    recent_views     recent_items         least recently viewed   -
    messages         max_attributed_      oldest send             its later opens, clicks and
                     messages                                     purchases are not attributed
    post_purchase    post_purchase_       oldest purchase         not in the evidence
      products         max_items
    price_drop,      max_signal_products  oldest fire             that product's cooldown is
      back_in_stock                                               forgotten
    (window buckets, sent and the other parts are bounded by their time limit and granularity)

Segments (transforms/segments.py) are no part of the state: they are computed from the
windows at each fire and snapshot, so they add nothing here and expire with the windows.

The state is picklable (engines keep it in their state backends) and `None` once all of it
has expired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

from transforms.catalog_changes import CatalogSignal
from transforms.model import DROPPED, BehaviourEvent, CustomerProfile, Product
from transforms.windows import Windows

Item = BehaviourEvent | CustomerProfile | CatalogSignal


class CustomerState:
    """Mutable per-customer state; see the module docstring for what each part holds."""

    __slots__ = (
        "customer_id",
        "pending",
        "seen",
        "windows",
        "cart",
        "cart_changed_at",
        "recent_views",
        "purchased",
        "triggers",
        "sent",
        "profile",
        "consent",
        "erased_at",
        "features_due",
        "last_trigger",
        "processed_until",
        "next_purge",
        "messages",
    )

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.pending: list[tuple[int, int, str, Item]] = []  # (time, rank, event_id, item)
        self.seen: dict[str, int] = {}
        self.windows = Windows()
        self.cart: dict[str, tuple[int, Product, str]] = {}
        self.cart_changed_at: int | None = None
        self.recent_views: dict[str, tuple[int, str | None, str | None, float | None]] = {}
        self.purchased: dict[str, int] = {}
        self.triggers: dict[str, Any] = {}
        self.sent: list[tuple[int, str]] = []
        self.profile: CustomerProfile | None = None
        # Email consent as (granted, as_of, timed): see set_consent.
        self.consent: tuple[bool, int, bool] | None = None
        self.erased_at: int | None = None
        self.features_due: int | None = None  # when the next feature-store snapshot is due
        self.last_trigger: str | None = None
        self.processed_until: int | None = None
        self.next_purge: int | None = None
        # Sends remembered for attribution (transforms/attribution.py Sent), oldest first.
        self.messages: list[tuple[int, str, str, bool]] = []

    def __getstate__(self) -> tuple[Any, ...]:
        # A tuple in slot order: engines pickle the state on every write, and the slot names
        # would be most of a small state's bytes.
        return _slot_values(self)

    def __setstate__(self, values: tuple[Any, ...] | dict[str, Any]) -> None:
        if isinstance(values, dict):  # the form of states pickled before (savepoints)
            values = tuple(values.get(name) for name in self.__slots__)
        elif len(values) < len(self.__slots__):  # pickled before the last slots were added
            values = tuple(values) + (None,) * (len(self.__slots__) - len(values))
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)
        if self.messages is None:
            self.messages = []
        # Recent views held (ts, Product) before; a state is all in one form or the other, so
        # one entry tells (this runs on every unpickle).
        consent = self.consent
        if consent is not None and len(consent) == 2:
            # (granted, as_of) before: a revocation stays binding, a grant stays revocable.
            self.consent = (consent[0], consent[1], not consent[0])
        recent: dict[str, Any] = self.recent_views
        if recent and len(next(iter(recent.values()))) == 2:
            self.recent_views = {
                p: (at, prod.category, prod.brand, prod.price) for p, (at, prod) in recent.items()
            }

    def __repr__(self) -> str:
        return (
            f"CustomerState({self.customer_id!r}, pending={len(self.pending)}, "
            f"seen={len(self.seen)}, cart={sorted(self.cart)}, triggers={self.triggers!r})"
        )

    def set_consent(self, granted: bool, as_of: int, timed: bool) -> bool:
        """Take an email consent statement if it wins over the one held; True if taken.

        Timed statements (consent events, profiles with consent_updated_at) carry their own
        consent time; an untimed one (a profile without it) only its snapshot time, as_of =
        updated_at, and its consent may be older than that. Against the held statement:

            both timed or both untimed     the newest as_of wins (ties: the later processed)
            timed over untimed             when newer, or always when it revokes
            untimed over timed             only to revoke a grant it is newer than

        So a CRM snapshot never re-grants after an explicit unsubscribe unless it carries a
        newer consent time, and any doubt resolves towards no email. The held as_of never
        goes back (an older revocation taken over a snapshot holds as of the snapshot).
        """
        held = self.consent
        if held is not None:
            newer = as_of >= held[1]
            if timed == held[2]:
                taken = newer
            elif timed:
                taken = newer or not granted
            else:
                taken = newer and not granted and held[0]
            if not taken:
                return False
            as_of = max(as_of, held[1])  # never back in time (the feature store keeps the newest)
        self.consent = (granted, as_of, timed)
        return True

    def has_consent(self) -> bool:
        """Email consent as of now (the last statement processed)."""
        return self.consent is not None and self.consent[0]


# What a keyed stage's step did to the state it was given (step_change), for engines whose
# state writes cost per byte (Flink pickles the state on every write): UNCHANGED (a
# duplicate), BUFFERED (only the item appended to `pending` and, unless a profile, its event
# id set in `seen`: what rebuffer repeats; its wake_at is [the stage's buffered_wake(entry)]),
# CHANGED (anything else, or a new state).
UNCHANGED, BUFFERED, CHANGED = 0, 1, 2
DUPLICATE = (DROPPED, "duplicate")   # the customer core's one output for a duplicate


def entry_time(entry: tuple[int, int, str, Any]) -> int:
    """The customer core's buffered_wake: a buffered item is due at its own time."""
    return entry[0]


def step_change(held: int | None, state: Any, outputs: list[Any], wake_at: list[int],
                buffered_wake: Callable[[Any], int] = entry_time) -> int:
    """What the step that returned (state, outputs, wake_at) changed; `held` is
    len(state.pending) before it, None when there was no state. A step outputs nothing only
    when it buffered its item (pending one longer) or applied a late item at once (pending no
    longer: caught up or as it was); a duplicate outputs only its count and changes nothing.
    A buffering step is BUFFERED when it asked for the wake `buffered_wake` gives its entry,
    so that an engine can tell the timer from the entries alone; else (the product stage
    asking to fold its interest in early) CHANGED. The same holds for the product stage's
    steps (transforms/product_stage.py: a duplicate change there is counted under another
    reason, so it is CHANGED, which only costs a write) and, once its watermark is known not
    to have moved, for the arms stage's (bandit.Arms.step_change)."""
    if held is None or state is None:
        return CHANGED
    if not outputs:
        pending = state.pending
        if len(pending) == held + 1 and wake_at == [buffered_wake(pending[-1])]:
            return BUFFERED
        return CHANGED
    if len(outputs) == 1 and outputs[0] == DUPLICATE:
        return UNCHANGED
    return CHANGED


def rebuffer(state: Any, buffered: Iterable[tuple[int, int, str, Any]]) -> int:
    """Repeat on `state` the steps that only buffered these pending entries, in their order
    (step_change BUFFERED: each entry appended to `pending` and, but for a profile's, rank
    0, its event id set in `seen` to its time); returns how many. An engine that writes the
    state whole only when a step changed more can keep such entries apart (appended to a list)
    and rebuild the state from both. The product stage's ProductState follows the same rule
    (its `seen` holds catalog change ids, rank 1; product events, rank 0, set none)."""
    pending, seen = state.pending, state.seen
    n = 0
    for entry in buffered:
        pending.append(entry)
        if entry[1]:
            seen[entry[2]] = entry[0]
        n += 1
    return n


def last_touch(state: CustomerState) -> int | None:
    """The newest time anything was learnt about the customer (activity, profile, consent)."""
    times = [t for t in (state.windows.last_activity,) if t is not None]
    if state.profile is not None:
        times.append(state.profile.updated_at)
    if state.consent is not None:
        times.append(state.consent[1])
    return max(times) if times else None


# CustomerState's slots in order, read in one C call (its pickle; see __getstate__).
_slot_values = attrgetter(*vars(CustomerState)["__slots__"])
