"""The product-keyed stage of price drop and back in stock (DESIGN.md section 10), engine free.

    step(state | None, item, watermark) -> (state | None, outputs, wake_at)
    wake(state | None, t)               -> (state | None, outputs, wake_at)

keyed by product_id, the same contract as the customer core (transforms/core.py): `step` dedups
catalog changes by change_id, rejects late items and buffers; `wake(t)` processes the buffered
items with event time <= t in (event time, events before changes, id) order. Adapters keep the
state and timers exactly as for the customer stage (pipelines/keyed.py).

    items:   BehaviourEvent   product_view / add_to_cart / purchase with a product (the
                              customer's interest, or its end); other events are ignored;
                              kept as its Interest (`interest_of`, which an engine may send
                              instead of the event)
             CatalogChange    a new price and / or stock state (transforms/catalog_changes.py)
    outputs: (SIGNAL, CatalogSignal)  one per interested customer, at the change's occurred_at,
                                      for the customer stage (keyed by customer_id)
             (DEAD_LETTER, DeadLetter) a late catalog change
             (DROPPED, reason)        duplicate_change, evicted:interested,
                                      evicted:change_ids, evicted:product_pending
A late event is ignored here and not counted: the customer stage dead-letters it (`late`).

Rules, per product:
- Interest: a view or cart add at t makes the customer interested as of t; a purchase by the
  customer removes the interest. Interest counts within (t_change - interest_window, t_change]:
  a view exactly interest_window before the change is too old.
- A change with a price at least `price_drop_min_pct` percent below the last known price (both
  known, the last > 0) is a price drop; a change to in_stock true when the last known state was
  false is a restock (an unknown last state is not: nothing says it was out). A change that is
  both emits both kinds; the customer stage's policy (priority) picks.
- Each kind emits one CatalogSignal per interested customer (newest `max_interested` kept).

Folding interest in lazily. Interest is only read when a change is processed, so a buffered
interest does not ask for a wake at its own time (a change does): it waits for the product's
next wake, at the latest its expiry (`buffered_wake`), or for core.interest_fold buffered
items (then the next watermark folds them in). An engine thus wakes and rewrites a product's
state about once per change, expiry or interest_fold items, not once per view. The outputs do
not depend on when interest is folded in: items are processed in the same order whenever that
is, a change reads only interest within its window, and the cap evicts only interest still
live at the item's time (expired interest is dropped first, as of each item).

Cost: a change fans out to at most `max_interested` signals (one customer-stage item each);
the product state holds at most max_interested customers, max_change_ids change ids and
max_pending buffered items (interest_fold and a watermark's worth, while the watermark moves).
Every part expires: interest after interest_window, change ids after dedup_ttl, the last
price / stock after catalog_state_ttl without a change (a later change then has no price to
compare: no drop, no restock); the state is None when all have.

Time of a signal: the change's occurred_at. The stage emits it when the watermark passes
that time, before the customer stage is woken past it: on Flink the customer stage's input is
the union of the items and this stage's output, so its watermark waits for this stage's timers
(docs/flink-topology.md); on Beam a SignalGate caps the customer stage's wakes below this
stage's next wakes and its signals in flight (pipelines/beam_products.py); the reference runner
fires this stage's timers before the customers' (pipelines/product_loop.py). So every adapter
steps a signal into the customer core with watermark occurred_at - 1 (`signal_watermark`: a
signal belongs to no source partition, and the clock never makes it late), and only the
customer's own progress (processed past the signal's time, e.g. by catching up for a late
event of another partition) can make it late; the core then audits it `suppressed:late`
(transforms/core.py) rather than dropping it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Final, NamedTuple

from transforms.bounds import evict
from transforms.catalog_changes import (
    BACK_IN_STOCK,
    PRICE_DROP,
    CatalogChange,
    CatalogSignal,
    encode_change,
)
from transforms.clock import END_OF_TIME
from transforms.model import (
    ADD_TO_CART,
    DEAD_LETTER,
    DROPPED,
    PRODUCT_VIEW,
    PURCHASE,
    R_LATE,
    BehaviourEvent,
    Origin,
    Output,
)
from transforms.settings import HOUR, CoreSettings
from transforms.sizes import dead_letter
from transforms.slots import SlotTuple

SIGNAL: Final = "signal"  # output kind: a CatalogSignal for the customer stage
INTEREST_EVENTS: Final = frozenset({PRODUCT_VIEW, ADD_TO_CART, PURCHASE})
EVICTED_INTERESTED: Final = "evicted:interested"
EVICTED_CHANGE_IDS: Final = "evicted:change_ids"
EVICTED_PRODUCT_PENDING: Final = "evicted:product_pending"
PURGE_EVERY: Final = HOUR  # expiry wakes are rounded up to this grid
_NEVER = 1 << 64

Result = tuple["ProductState | None", list[Output], list[int]]


class Interest(NamedTuple):
    """What this stage keeps of a view, cart add or purchase (`bought`) of a product: an
    engine may hand it this instead of the event (`interest_of`: less to serialize)."""

    event_id: str
    customer_id: str
    product_id: str
    occurred_at: int
    bought: bool


ProductItem = BehaviourEvent | Interest | CatalogChange


def product_of(item: Any) -> str | None:
    """The product key of an item this stage takes, or None (not for this stage)."""
    if isinstance(item, CatalogChange | Interest):
        return item.product_id
    if isinstance(item, BehaviourEvent) and item.event_type in INTEREST_EVENTS:
        p = item.product
        return None if p is None else p.product_id
    return None


def interest_of(item: Any) -> Interest | Any:
    """What this stage takes of an item product_of keys: a change as it is, an event as its
    Interest."""
    if isinstance(item, BehaviourEvent):
        assert item.product is not None
        return Interest(item.event_id, item.customer_id, item.product.product_id,
                        item.occurred_at, item.event_type == PURCHASE)
    return item


class ProductState(SlotTuple):
    """Per product: buffered items, change ids, last price / stock, interested customers."""

    __slots__ = ("product_id", "pending", "seen", "price", "in_stock", "changed_at",
                 "interested", "processed_until")

    def __init__(self, product_id: str) -> None:
        self.product_id = product_id
        # (time, rank, id, Interest or CatalogChange)
        self.pending: list[tuple[int, int, str, Interest | CatalogChange]] = []
        self.seen: dict[str, int] = {}          # change_id -> occurred_at
        self.price: float | None = None
        self.in_stock: bool | None = None
        self.changed_at: int | None = None      # the last change applied
        self.interested: dict[str, int] = {}    # customer -> interest time, oldest first
        self.processed_until: int | None = None

    def __repr__(self) -> str:
        return (f"ProductState({self.product_id!r}, pending={len(self.pending)}, "
                f"price={self.price}, in_stock={self.in_stock}, interested={self.interested})")


class ProductStage:
    """The product-keyed rules, configured once from the settings."""

    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings
        self.window = settings.interest_window
        self.max_interested = max(1, settings.max_interested)
        self.min_pct = settings.price_drop_min_pct
        self.state_ttl = settings.catalog_state_ttl
        self.dedup_ttl = settings.dedup_ttl
        self.max_change_ids = max(1, settings.max_change_ids)
        self.max_pending = max(1, settings.max_pending)
        self.fold_after = max(1, settings.interest_fold)

    # ------------------------------------------------------------------ the keyed contract

    def step(self, state: ProductState | None, item: ProductItem,
             watermark: int | None = None) -> Result:
        """Take one item of this product: dedup changes, reject late items, buffer."""
        pid = product_of(item)
        if pid is None:
            return state, [], []
        if state is None:
            state = ProductState(pid)
        floor = -_NEVER if watermark is None else watermark
        if state.processed_until is not None and state.processed_until > floor:
            floor = state.processed_until
        t = item.occurred_at
        outputs: list[Output] = []
        if isinstance(item, CatalogChange):
            seen_at = state.seen.get(item.change_id)
            if seen_at is not None and abs(t - seen_at) < self.dedup_ttl:
                return self._finish(state, [(DROPPED, "duplicate_change")])
            if t <= floor:
                late = dead_letter(encode_change(item), item.origin or Origin("unknown"), R_LATE,
                                   f"occurred_at {t} is behind the watermark {floor}", floor,
                                   self.settings)
                return self._finish(state, [(DEAD_LETTER, late)])
            state.seen[item.change_id] = t
            if len(state.seen) > self.max_change_ids:
                seen = state.seen
                outputs += [(DROPPED, EVICTED_CHANGE_IDS)] * evict(seen, self.max_change_ids,
                                                                   seen.__getitem__)
            state.pending.append((t, 1, item.change_id, item))
        else:
            if t <= floor:  # not counted: the customer stage dead-letters the event itself
                return self._finish(state, [])
            interest = item if type(item) is Interest else interest_of(item)
            state.pending.append((t, 0, interest.event_id, interest))
        pending = state.pending
        if len(pending) > self.max_pending:
            return self._overflow(state, outputs)
        if len(pending) == self.fold_after + 1:   # fold them at the next watermark
            return state, outputs, [min(p[0] for p in pending)]
        return state, outputs, [self.buffered_wake(pending[-1])]

    def buffered_wake(self, entry: tuple[int, int, str, Any]) -> int:
        """The wake a step that only buffered `entry` asks for (state.step_change BUFFERED): a
        change's time; for an interest, its expiry on the hour grid, as interest is only
        needed when a change is processed (it is folded in then, or interest_fold at a time)."""
        return entry[0] if entry[1] else self._expiry(entry[0])

    def _expiry(self, t: int) -> int:
        """The wake at which interest shown at t has expired (on the PURGE_EVERY grid)."""
        return _on_grid(t + self.window)

    def wake(self, state: ProductState | None, t: int) -> Result:
        """Event time reached t: process the items due by t in order, then expire."""
        if state is None:
            return None, [], []
        outputs: list[Output] = []
        pending = state.pending
        if pending:
            if len(pending) > 1:
                pending.sort(key=_order)
            if pending[-1][0] <= t:  # all due (the usual case): no slicing
                due, state.pending = pending, []
            else:
                cut = 0
                while cut < len(pending) and pending[cut][0] <= t:
                    cut += 1
                due, state.pending = pending[:cut], pending[cut:]
            for _, _, _, item in due:
                if isinstance(item, CatalogChange):
                    self._change(state, item, outputs)
                else:
                    self._interest(state, item, outputs)
        if state.processed_until is None or t > state.processed_until:
            state.processed_until = t
        self._purge(state, t)
        return self._finish(state, outputs)

    # ------------------------------------------------------------------ rules

    def _interest(self, state: ProductState, ev: Interest, outputs: list[Output]) -> None:
        if type(ev) is not Interest:   # buffered whole by an older version (a savepoint's)
            ev = interest_of(ev)
        interested = state.interested
        cid = ev.customer_id
        interested.pop(cid, None)
        if ev.bought:
            return
        # Items are processed in time order, each after every item processed before it
        # (step rejects those at or before processed_until): insertion order is age, and the
        # times never decrease in it, which _purge and _finish rely on.
        t = ev.occurred_at
        # Expired as of this item first, so that the cap evicts only live interest: what it
        # evicts then depends on the items alone, not on when wakes fold them in.
        self._expire(interested, t)
        interested[cid] = t
        if len(interested) > self.max_interested:
            outputs += [(DROPPED, EVICTED_INTERESTED)] * evict(interested, self.max_interested)

    def _change(self, state: ProductState, c: CatalogChange, outputs: list[Output]) -> None:
        t = c.occurred_at
        old_price, new_price = state.price, c.price
        kinds = []
        if c.in_stock is True and state.in_stock is False:
            kinds.append(BACK_IN_STOCK)
        if (old_price is not None and new_price is not None and old_price > 0
                and (old_price - new_price) * 100 >= self.min_pct * old_price):
            kinds.append(PRICE_DROP)
        if new_price is not None:
            state.price = new_price
        if c.in_stock is not None:
            state.in_stock = c.in_stock
        state.changed_at = t
        if not kinds:
            return
        horizon = t - self.window
        shown = state.price
        for kind in kinds:
            for cid, at in state.interested.items():
                if at > horizon:
                    outputs.append((SIGNAL, CatalogSignal(
                        f"{state.product_id}:{c.change_id}:{kind}", cid, kind, t,
                        state.product_id, c.change_id, at,
                        old_price if kind == PRICE_DROP else None, shown, c.category)))

    # ------------------------------------------------------------------ size and expiry

    def _overflow(self, state: ProductState, outputs: list[Output]) -> Result:
        """Pending over max_pending: process its oldest items now (none is lost; later items
        behind them are late), as the customer core does."""
        pending = state.pending
        pending.sort(key=_order)
        keep = self.max_pending - self.max_pending // 16
        first_kept = pending[len(pending) - keep][0]
        cut = first_kept - 1 if first_kept > pending[0][0] else first_kept
        held = len(pending)
        after, out, wake_at = self.wake(state, cut)
        early = held - (len(after.pending) if after is not None else 0)
        return after, outputs + [(DROPPED, EVICTED_PRODUCT_PENDING)] * early + out, wake_at

    def _expire(self, interested: dict[str, int], now: int) -> None:
        """Drop the interest expired at `now`: times never decrease in insertion order
        (_interest), so the expired are first."""
        horizon = now - self.window
        while interested and next(iter(interested.values())) <= horizon:
            del interested[next(iter(interested))]

    def _purge(self, state: ProductState, now: int) -> None:
        self._expire(state.interested, now)
        if state.seen:
            cut = now - self.dedup_ttl
            state.seen = {i: at for i, at in state.seen.items() if at > cut}
        if state.changed_at is not None and state.changed_at <= now - self.state_ttl:
            state.price = state.in_stock = state.changed_at = None

    def _finish(self, state: ProductState, outputs: list[Output]) -> Result:
        """The next wake (the first pending item, else the next expiry on the hour grid), or
        None state when nothing is left."""
        ends = []
        if state.interested:  # the oldest interest is the first (_interest)
            ends.append(next(iter(state.interested.values())) + self.window)
        if state.seen:
            ends.append(min(state.seen.values()) + self.dedup_ttl)
        if state.changed_at is not None:
            ends.append(state.changed_at + self.state_ttl)
        if not ends and not state.pending:
            return None, outputs, []
        wake = _NEVER
        if ends:
            wake = _on_grid(min(ends))
        pending = state.pending
        if len(pending) > self.fold_after:
            wake = min(wake, min(p[0] for p in pending))
        elif pending:
            wake = min(wake, min(map(self.buffered_wake, pending)))
        return state, outputs, [wake]


def _on_grid(t: int) -> int:
    """The first instant on the PURGE_EVERY grid at or after t (at most END_OF_TIME)."""
    return min(-(-t // PURGE_EVERY) * PURGE_EVERY, END_OF_TIME)


_order = itemgetter(0, 1, 2)  # a pending item's (time, rank, id): its processing order


def signal_watermark(signal: CatalogSignal) -> int:
    """The watermark every adapter steps a signal into the customer core with: its own time
    - 1, so the clock never makes it late (the module docstring says why that is sound)."""
    return signal.occurred_at - 1
