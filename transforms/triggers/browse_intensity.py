"""Browse intensity (DESIGN.md section 4).

When a customer's product views in one category within the trailing window (t - browse_window, t]
reach `browse_views`, and the customer has no add_to_cart in that category within the same
window, the trigger fires at the time of that view, keyed by the category, with the viewed
product ids (sorted, unique) as evidence. At most once per customer and category per
`browse_cooldown`: a fire starts the cooldown whether the policy then emits it or not.

Slot: BrowseSlot (per category: recent views, last add_to_cart time, last fire time). Capped
in size by on_event: at most `max_category_views` views per category (never fewer than
`browse_views`, so no fire is missed; the evidence then holds the newest), and at most
`max_categories` categories in each of views, adds and cooldowns, the least recent evicted (an
evicted add or cooldown no longer blocks a fire: the contact policy's caps still apply).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from transforms.bounds import EVICTED_BROWSE_CATEGORIES, EVICTED_BROWSE_VIEWS, evict
from transforms.model import ADD_TO_CART, PRODUCT_VIEW, BehaviourEvent, FiredTrigger
from transforms.settings import CoreSettings
from transforms.state import CustomerState

TYPE = "browse_intensity"


class BrowseSlot:
    """Per-category views in the window, last add_to_cart, and last fire (cooldown)."""

    __slots__ = ("views", "last_add", "fired")

    def __init__(self) -> None:
        # category -> [(ts, product, event)] in event-time order (the core applies events in
        # that order): lists, not deques, so that pickling them is pickle's own C loop.
        self.views: dict[str, list[tuple[int, str, str]]] = {}
        self.last_add: dict[str, int] = {}
        self.fired: dict[str, int] = {}

    def __getstate__(self) -> tuple[object, ...]:
        return (self.views, self.last_add, self.fired)

    def __setstate__(self, values: tuple[dict, dict, dict]) -> None:
        views, self.last_add, self.fired = values
        self.views = {c: list(v) for c, v in views.items()}

    def __repr__(self) -> str:
        return f"BrowseSlot(views={self.views}, last_add={self.last_add}, fired={self.fired})"


class BrowseIntensity:
    """Fires on the `browse_views`-th view of a category within `browse_window`."""

    type = TYPE
    has_deadline = False
    event_types = frozenset({PRODUCT_VIEW, ADD_TO_CART})

    def __init__(self, settings: CoreSettings) -> None:
        self.window = settings.browse_window
        self.views_needed = settings.browse_views
        self.cooldown = settings.browse_cooldown
        self.max_views = max(settings.max_category_views, settings.browse_views)
        # Trimmed to this many views per category, enough to fire on the next view.
        self.keep_views = max(self.max_views - self.max_views // 16, settings.browse_views)
        self.max_categories = settings.max_categories

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """Count views per category; fire when the threshold is reached; evict beyond the
        caps (one `evicted:<part>` reason per entry)."""
        etype = event.event_type
        if etype != PRODUCT_VIEW and etype != ADD_TO_CART:
            return []
        product = event.product
        if product is None or not product.category:
            return []
        category = product.category
        t = event.occurred_at
        slot: BrowseSlot | None = state.triggers.get(TYPE)
        if slot is None:
            slot = state.triggers[TYPE] = BrowseSlot()
        if etype == ADD_TO_CART:
            slot.last_add[category] = t
            if len(slot.last_add) > self.max_categories:
                return self._evict(slot.last_add, slot.last_add.__getitem__)
            return []
        views = slot.views.get(category)
        if views is None:
            views = slot.views[category] = []
        views.append((t, product.product_id, event.event_id))
        horizon = t - self.window
        if views[0][0] <= horizon:
            del views[:bisect_right(views, horizon, key=view_time)]
        out: list[FiredTrigger | str] = []
        if len(views) > self.max_views:  # trimmed to keep_views >= views_needed: same decision
            cut = len(views) - self.keep_views
            del views[:cut]
            out = [EVICTED_BROWSE_VIEWS] * cut
        if len(slot.views) > self.max_categories:
            by_category = slot.views
            out += self._evict(by_category, lambda c: by_category[c][-1][0])
        if len(views) < self.views_needed:
            return out
        last_add = slot.last_add.get(category)
        if last_add is not None and last_add > horizon:
            return out
        fired = slot.fired.get(category)
        if fired is not None and fired > t - self.cooldown:
            return out
        slot.fired[category] = t
        if len(slot.fired) > self.max_categories:
            out += self._evict(slot.fired, slot.fired.__getitem__)
        out.append(
            FiredTrigger(
                type=TYPE,
                key=category,
                fired_at=t,
                evidence=sorted({pid for _, pid, _ in views}),
                source_event_ids=sorted(eid for _, _, eid in views),
                category=category,
            )
        )
        return out

    def _evict(
        self, entries: dict[str, Any], age: Callable[[str], int]
    ) -> list[FiredTrigger | str]:
        """Categories evicted from `entries` beyond the cap, least recent (smallest age) first."""
        return [EVICTED_BROWSE_CATEGORIES] * evict(entries, self.max_categories, age)

    def deadline(self, state: CustomerState) -> int | None:
        """Browse intensity has no timers: it fires on views."""
        return None

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """Never called (no deadlines)."""
        return []

    def expires_at(self, state: CustomerState) -> int | None:
        """When the newest view, add and cooldown have all left their windows."""
        slot: BrowseSlot | None = state.triggers.get(TYPE)
        if slot is None:
            return None
        ends = [views[-1][0] + self.window for views in slot.views.values() if views]
        ends += [t + self.window for t in slot.last_add.values()]
        ends += [t + self.cooldown for t in slot.fired.values()]
        return max(ends) if ends else None

    def purge(self, state: CustomerState, now: int) -> None:
        """Drop views and adds out of the window and cooldowns that ended."""
        slot: BrowseSlot | None = state.triggers.get(TYPE)
        if slot is None:
            return
        horizon = now - self.window
        for category in list(slot.views):
            views = slot.views[category]
            cut = bisect_right(views, horizon, key=view_time)
            if cut == len(views):
                del slot.views[category]
            elif cut:
                del views[:cut]
        slot.last_add = {c: t for c, t in slot.last_add.items() if t > horizon}
        slot.fired = {c: t for c, t in slot.fired.items() if t > now - self.cooldown}
        if not (slot.views or slot.last_add or slot.fired):
            del state.triggers[TYPE]


def view_time(view: tuple[int, str, str]) -> int:
    """The time of a (time, product, event) view: the sort key of a category's views."""
    return view[0]


TRIGGER = BrowseIntensity
