"""State bounded by size (DESIGN.md section 8): a hot or hostile customer id holds bounded state.

The streams are pure and time is data: one customer's events stepped as an engine steps them
(watermark = max seen - max_out_of_orderness - 1, the customer's timer fired in rounds).
"""

import pickle
from collections import Counter

from tests.builders import CID, HOUR, MINUTE, T0, add, profile, purchase, view
from transforms.bounds import evict
from transforms.core import Core
from transforms.model import (
    ADD_TO_CART,
    DEAD_LETTER,
    DROPPED,
    PAYLOAD,
    PRODUCT_VIEW,
    BehaviourEvent,
    Item,
    Product,
)
from transforms.settings import DAY, CoreSettings
from transforms.state import CustomerState
from transforms.triggers.browse_intensity import TYPE as BROWSE

PROTOCOL = pickle.HIGHEST_PROTOCOL


class OneCustomer:
    """One customer's state, stepped and woken as an engine does (timers fire in rounds)."""

    def __init__(self, core: Core, fire_every: int = 256) -> None:
        self.core = core
        self.fire_every = fire_every
        self.state: CustomerState | None = None
        self.timer: int | None = None
        self.watermark: int | None = None
        self.fed = 0
        self.dropped: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.payloads = 0

    def feed(self, item: Item) -> None:
        t = item.occurred_at if hasattr(item, "occurred_at") else item.updated_at
        mark = t - self.core.settings.max_out_of_orderness - 1
        if self.watermark is None or mark > self.watermark:
            self.watermark = mark
        self._take(*self.core.step(self.state, item, self.watermark), woken=False)
        self.fed += 1
        if self.fed % self.fire_every == 0:
            self.fire(self.watermark)

    def fire(self, t: int) -> None:
        if self.timer is not None and self.timer <= t:
            self._take(*self.core.wake(self.state, t), woken=True)

    def _take(self, state, outputs, wake_at, woken: bool) -> None:
        self.state = state
        if woken or self.timer is None:
            self.timer = min(wake_at) if wake_at else None
        elif wake_at:
            self.timer = min(self.timer, *wake_at)
        for kind, record in outputs:
            if kind == DROPPED:
                self.dropped[record] += 1
            elif kind == DEAD_LETTER:
                self.dead[record.reason] += 1
            elif kind == PAYLOAD:
                self.payloads += 1

    def pickled(self) -> int:
        return len(pickle.dumps(self.state, PROTOCOL))

    def counted(self) -> dict[str, int]:
        """Pickled bytes of the parts that grow with the number of events (not with time)."""
        state = self.state
        assert state is not None
        parts = {"seen": state.seen, "sessions": state.windows.sessions, "cart": state.cart}
        return {name: len(pickle.dumps(part, PROTOCOL)) for name, part in parts.items()}


def bound(s: CoreSettings, categories: int, buckets: int) -> int:
    """Pickled bytes a state of these streams can reach, from the caps: per entry, a dedup id
    (<= 16 characters) and its time < 32 B, a session < 32 B, a pending item < 200 B, a cart
    line (id, qty, product, event id) < 160 B, a browse view < 48 B, a window bucket < 12 B
    (`buckets` per window category, which the time buckets bound), a category < 32 B; 4 kB for
    the rest (profile, recent views, scalars)."""
    held = min(categories, s.max_categories)
    return (
        s.max_dedup_ids * 32
        + s.max_sessions * 32
        + s.max_pending * 200
        + s.max_cart_lines * 160
        + held * (32 + buckets * 12)
        + held * (3 * 32 + max(s.max_category_views, s.browse_views) * 48)
        + s.max_purchased * 32
        + 4096
    )


def hot_day(n: int) -> list[Item]:
    """n events of one customer within one day: views in 50 categories, an add_to_cart of a
    new product every 40th event, a new session every 20 events."""
    step = DAY // n
    items: list[Item] = [profile(T0 - HOUR)]
    for i in range(n):
        t, eid, session, category = T0 + i * step, f"e{i:07d}", f"s{i // 20:06d}", f"c{i % 50:02d}"
        if i % 40 == 39:
            items.append(_event(ADD_TO_CART, t, eid, f"a{i:07d}", category, session))
        else:
            items.append(_event(PRODUCT_VIEW, t, eid, f"p{i % 3000:04d}", category, session))
    return items


def _event(
    etype: str, t: int, eid: str, pid: str, category: str, session: str = "s1"
) -> BehaviourEvent:
    return BehaviourEvent(
        event_id=eid, customer_id=CID, event_type=etype, occurred_at=t, session_id=session,
        product=Product(pid, category, "acme", 10.0), quantity=1,
    )


def _view(t: int, eid: str, pid: str, category: str) -> BehaviourEvent:
    return _event(PRODUCT_VIEW, t, eid, pid, category)


def test_200k_events_of_one_customer_in_a_day_hold_the_same_bounded_state_as_100k():
    s = CoreSettings()
    one = OneCustomer(Core(s))
    items = hot_day(200_000)
    sizes, parts = [], []
    for i, item in enumerate(items):
        one.feed(item)
        if i in (100_000, 200_000):
            sizes.append(one.pickled())
            parts.append(one.counted())
    one.fire(T0 + DAY)
    state = one.state
    assert state is not None
    limit = bound(s, categories=50, buckets=300)
    assert sizes[0] <= limit and sizes[1] <= limit, (sizes, limit)
    # Twice the events, no more state in the parts that grow with them (the window buckets
    # grow with time until a day is covered: bounded by `buckets`).
    for name, size in parts[1].items():
        assert size <= parts[0][name] * 1.1, (name, parts)
    assert len(state.seen) <= s.max_dedup_ids
    assert len(state.windows.sessions) <= s.max_sessions
    assert len(state.cart) <= s.max_cart_lines
    assert len(state.pending) <= s.max_pending
    # Nothing expired by time within the day: every id, session and line not held was evicted.
    assert one.dropped["evicted:dedup"] == 200_000 - len(state.seen)
    assert one.dropped["evicted:sessions"] == 10_000 - len(state.windows.sessions)
    assert one.dropped["evicted:cart"] == 5_000 - len(state.cart)
    assert one.dead == Counter()
    # The newest of each are the ones held.
    assert "e0199999" in state.seen and "s009999" in state.windows.sessions
    assert "a0199999" in state.cart


def test_100k_distinct_categories_hold_the_same_bounded_state_as_50k():
    s = CoreSettings()
    one = OneCustomer(Core(s))
    n = 100_000
    step = DAY // n
    sizes = []
    one.feed(profile(T0 - HOUR))
    for i in range(n):
        one.feed(_view(T0 + i * step, f"e{i:07d}", f"p{i:07d}", f"c{i:07d}"))
        if i + 1 in (n // 2, n):
            sizes.append(one.pickled())
    one.fire(T0 + n * step)
    state = one.state
    assert state is not None
    limit = bound(s, categories=n, buckets=2)
    assert sizes[0] <= limit and sizes[1] <= limit, (sizes, limit)
    assert sizes[1] <= sizes[0] * 1.1
    assert len(state.windows.views) <= s.max_categories
    slot = state.triggers.get(BROWSE)
    assert slot is None or len(slot.views) <= s.max_categories
    assert one.dropped["evicted:categories"] == n - len(state.windows.views)
    # The least recently viewed categories went first.
    assert f"c{n - 1:07d}" in state.windows.views and "c0000000" not in state.windows.views


def test_a_full_pending_buffer_processes_its_oldest_items_early_and_loses_none():
    s = CoreSettings(max_pending=100)
    core = Core(s)
    state, outputs = None, []
    # The watermark stalls (no watermark at all): everything waits in the buffer.
    for i in range(1_000):
        state, out, _ = core.step(state, _view(T0 + i * 100, f"e{i:05d}", "p1", "shoes"))
        outputs += out
        assert len(state.pending) <= s.max_pending
    early = Counter(r for k, r in outputs if k == DROPPED)["evicted:pending"]
    assert early >= 1_000 - s.max_pending
    assert [k for k, _ in outputs if k == DEAD_LETTER] == []
    state, out, _ = core.wake(state, T0 + 1_000 * 100)
    assert sum(state.windows.views["shoes"].values()) == 1_000  # every view counted once
    # An event behind what was processed early is a dead letter with a reason, never lost.
    _, out, _ = core.step(state, _view(T0 + 50, "straggler", "p1", "shoes"))
    assert [(k, r.reason) for k, r in out] == [(DEAD_LETTER, "late")]


def test_a_full_pending_buffer_at_one_instant_is_processed_whole_and_the_rest_is_late():
    s = CoreSettings(max_pending=16)
    core = Core(s)
    state, outputs = None, []
    for i in range(100):
        state, out, _ = core.step(state, _view(T0, f"e{i:05d}", "p1", "shoes"))
        outputs += out
        assert len(state.pending) <= s.max_pending
    state, out, _ = core.wake(state, T0 + 1)
    counted = sum(state.windows.views["shoes"].values())
    late = [r.reason for k, r in outputs + out if k == DEAD_LETTER]
    assert counted >= s.max_pending and set(late) == {"late"}
    assert counted + len(late) == 100  # each event counted or dead-lettered, none lost


def test_an_evicted_dedup_id_lets_a_very_old_duplicate_through():
    s = CoreSettings(max_dedup_ids=100)
    core = Core(s)
    state, outputs = None, []
    for i in range(200):
        state, out, _ = core.step(state, _view(T0 + i, f"e{i:05d}", "p1", "shoes"))
        outputs += out
    evicted = Counter(r for k, r in outputs if k == DROPPED)["evicted:dedup"]
    assert evicted == 200 - len(state.seen) and len(state.seen) <= 100
    _, out, _ = core.step(state, _view(T0 + 199, "e00199", "p1", "shoes"))
    assert out == [(DROPPED, "duplicate")]
    _, out, _ = core.step(state, _view(T0, "e00000", "p1", "shoes"))
    assert out == []  # evicted: the duplicate passes (the documented cost of the cap)


def test_purchased_products_are_capped_newest_kept():
    s = CoreSettings(max_purchased=100)
    one = OneCustomer(Core(s))
    for i in range(300):
        one.feed(purchase(T0 + i * MINUTE, f"b{i:04d}", eid=f"e{i:05d}"))
    one.fire(T0 + DAY)
    state = one.state
    assert state is not None and len(state.purchased) <= 100
    assert "b0299" in state.purchased and "b0000" not in state.purchased
    assert one.dropped["evicted:purchased"] == 300 - len(state.purchased)


def test_normal_traffic_evicts_nothing():
    one = OneCustomer(Core())
    one.feed(profile(T0 - HOUR))
    for i in range(200):
        one.feed(view(T0 + i * MINUTE, f"p{i % 7}", f"c{i % 3}"))
        if i % 50 == 0:
            one.feed(add(T0 + i * MINUTE + 1, f"p{i % 7}", f"c{i % 3}"))
    one.fire(T0 + DAY)
    assert not [r for r in one.dropped if r.startswith("evicted:")]


def test_evict_drops_the_first_inserted_beyond_the_cap_with_slack():
    d = {f"k{i}": i for i in range(33)}
    assert evict(d, 32) == 3  # one over, then a sixteenth of the cap more
    assert list(d) == [f"k{i}" for i in range(3, 33)]
    assert evict(d, 32) == 0


def test_evict_by_age_drops_the_smallest():
    d = {"a": 5, "b": 1, "c": 9, "d": 3}
    assert evict(d, 3, d.__getitem__) == 1
    assert d == {"a": 5, "c": 9, "d": 3}
    assert evict(d, 1, d.__getitem__) == 2 and d == {"c": 9}


def test_caps_of_zero_keep_the_core_working():
    s = CoreSettings(max_pending=0, max_dedup_ids=0, max_sessions=0, max_categories=0)
    one = OneCustomer(Core(s))
    for i in range(50):
        one.feed(_view(T0 + i * MINUTE, f"e{i:05d}", "p1", "shoes"))
    one.fire(T0 + DAY)
    assert one.dead == Counter() and one.dropped["evicted:pending"] > 0
