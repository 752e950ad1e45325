import copyreg
import io
import pickle
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import (
    CART_DELAY,
    HOUR,
    MINUTE,
    SECOND,
    T0,
    add,
    erasure,
    profile,
    purchase,
    view,
)
from tests.transforms.drive import decisions, drive, payloads
from transforms.core import Core
from transforms.model import AUDIT, CONSENT, DEAD_LETTER, DROPPED, ERASE, FEATURES, PAYLOAD, Product
from transforms.settings import DAY, CoreSettings
from transforms.state import CustomerState
from transforms.windows import Windows


def test_duplicates_within_the_ttl_are_dropped_and_counted():
    core = Core()
    v = view(T0)
    state, out, wake = core.step(None, v)
    assert wake == [T0]
    state, out, wake = core.step(state, view(T0, eid=v.event_id))
    assert out == [(DROPPED, "duplicate")] and wake == []


def test_duplicate_after_processing_is_still_dropped_not_late():
    core = Core()
    v = view(T0)
    state, _, _ = core.step(None, v)
    state, _, _ = core.wake(state, T0 + MINUTE)
    state, out, _ = core.step(state, view(T0, eid=v.event_id), watermark=T0 + MINUTE)
    assert out == [(DROPPED, "duplicate")]


def test_same_id_beyond_the_dedup_ttl_is_a_new_event():
    core = Core()
    v = view(T0)
    state, _, _ = core.step(None, v)
    state, out, wake = core.step(state, view(T0 + DAY, eid=v.event_id))
    assert out == [] and wake == [T0 + DAY]


def test_late_events_go_to_dead_letters_with_reason_late():
    core = Core()
    state, out, _ = core.step(None, view(T0), watermark=T0 - 1)
    assert out == []
    state, out, _ = core.step(state, view(T0 - 10 * SECOND), watermark=T0 - 1)
    ((kind, dead),) = out
    assert kind == DEAD_LETTER and dead.reason == "late"
    assert dead.raw  # the event, re-encoded


def test_event_at_the_watermark_is_late_and_after_it_is_not():
    core = Core()
    _, out, _ = core.step(None, view(T0), watermark=T0)
    assert out[0][0] == DEAD_LETTER
    _, out, _ = core.step(None, view(T0 + 1), watermark=T0)
    assert out == []


def test_a_late_profile_is_still_applied_when_newest():
    core = Core()
    state, _, _ = core.step(None, profile(T0 - HOUR, consent=False))
    state, _, _ = core.wake(state, T0)
    state, out, _ = core.step(state, profile(T0 - MINUTE, consent=True), watermark=T0)
    assert [kind for kind, _ in out] == [AUDIT, CONSENT] and state.has_consent()


def test_processing_follows_event_time_not_arrival():
    core = Core()
    items = [profile(), purchase(T0 + 30 * MINUTE), add(T0)]  # purchase arrives before the add
    _, out = drive(core, items, T0 + 3 * HOUR)
    assert [d for d in decisions(out) if d[0] == "cart_abandonment"] == []


def test_state_is_none_once_everything_has_expired():
    core = Core()
    items = [
        profile(),
        *(view(T0 + i * MINUTE) for i in range(6)),
        add(T0 + HOUR, "x", "hats"),
        purchase(T0 + 2 * HOUR, "x", "hats"),
    ]
    state, _ = drive(core, items, T0 + 3 * HOUR)
    assert state is not None
    t = T0 + 3 * HOUR
    # Follow the wakes the core asks for, as an engine would; it must end with no state.
    for _ in range(50):
        state, _, wake = core.wake(state, t)
        if state is None:
            break
        (t,) = wake
    assert state is None
    # The win-back email at purchase + win_back_delay is remembered for attribution for
    # attribution_window; then nothing is left.
    s = core.settings
    assert t <= T0 + 2 * HOUR + s.win_back_delay + s.attribution_window + 2 * HOUR


def test_idle_customer_wakes_only_a_handful_of_times():
    core = Core()
    state, _ = drive(core, [profile(), view(T0)], T0 + MINUTE)
    wakes = 0
    _, _, (t,) = core.wake(state, T0 + MINUTE)
    while state is not None:
        state, _, wake = core.wake(state, t)
        wakes += 1
        if wake:
            (t,) = wake
    assert wakes <= 6


def test_erasure_clears_state_audits_and_suppresses_everything_after():
    core = Core()
    items = [
        profile(),
        add(T0),
        erasure(T0 + 10 * MINUTE),
        *(view(T0 + HOUR + i * MINUTE) for i in range(5)),
    ]
    state, out = drive(core, items, T0 + 5 * HOUR)
    assert (ERASE, "c1") in out
    assert [(a.type, a.decision) for k, a in out if k == AUDIT] == [("customer_erasure", "erased")]
    assert not payloads(out)
    assert state.profile is None and not state.cart
    assert out.count((DROPPED, "erased")) == 5
    assert not [o for o in out if o[0] == FEATURES and o[1].as_of > T0 + 10 * MINUTE]


def test_feature_snapshots_are_written_behind_once_per_interval():
    core = Core()
    items = [profile(), *(view(T0 + i * SECOND) for i in range(120))]
    _, out = drive(core, items, T0 + HOUR)
    snaps = [o for k, o in out if k == FEATURES]
    # The 5th view fires browse intensity (T0 + 4 s): a snapshot then. Otherwise one per
    # interval, at its end, covering everything up to it: nothing a burst did is left unwritten.
    assert [s.as_of for s in snaps] == [T0 + 4 * SECOND, T0 + 60 * SECOND, T0 + 121 * SECOND]
    assert snaps[0].last_trigger == "browse_intensity"
    assert snaps[1].features["views_1h"] == {"shoes": 61}
    assert snaps[2].features["views_1h"] == {"shoes": 120}


def test_state_pickles_and_stays_small():
    core = Core()
    state, _ = drive(
        core, [profile(), *(view(T0 + i * MINUTE, f"p{i}") for i in range(20))], T0 + HOUR
    )
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    again = pickle.loads(blob)
    assert again.customer_id == "c1" and again.seen == state.seen
    assert len(blob) < 8000


def test_states_pickled_by_earlier_versions_still_load():
    """Savepoints hold pickled states: the slot-name forms written before still restore."""
    state, _ = drive(Core(), [profile(), view(T0), view(T0 + MINUTE, "p2")], T0 + HOUR)
    windows = state.windows
    old_windows = (None, {name: getattr(windows, name) for name in windows.__slots__})
    old_state = {name: getattr(state, name) for name in state.__slots__}
    # Recent views held the viewed Product itself before (ts, category, brand, price).
    old_state["recent_views"] = {
        p: (at, Product(p, category, brand, price))
        for p, (at, category, brand, price) in state.recent_views.items()
    }
    restored = CustomerState.__new__(CustomerState)
    restored.__setstate__(old_state)
    restored.windows = Windows.__new__(Windows)
    restored.windows.__setstate__(old_windows)
    again = pickle.loads(pickle.dumps(restored))
    assert (again.customer_id, again.seen, again.recent_views) == (
        state.customer_id, state.seen, state.recent_views
    )
    assert again.windows.features(T0 + HOUR) == windows.features(T0 + HOUR)
    # Products, events and profiles were pickled as plain slotted objects.
    product = Product("p1", "shoes", "acme", 9.5)

    class OldForm(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, Product):
                slots = {name: getattr(obj, name) for name in Product.__slots__}
                return copyreg.__newobj__, (Product,), (None, slots)
            return NotImplemented

    buffer = io.BytesIO()
    OldForm(buffer).dump(product)
    assert pickle.loads(buffer.getvalue()) == product == pickle.loads(pickle.dumps(product))


def journey():
    items = [profile()]
    items += [view(T0 + i * 20 * SECOND, f"p{i % 4}", "shoes") for i in range(8)]
    items += [
        add(T0 + 5 * MINUTE, "p1"),
        view(T0 + 6 * MINUTE, "h1", "hats"),
        add(T0 + 7 * MINUTE, "h1", "hats"),
        purchase(T0 + 20 * MINUTE, "h1", "hats"),
        add(T0 + 21 * MINUTE, "b1", "bags"),
    ]
    items += [
        view(T0 + CART_DELAY + 21 * MINUTE - 2 * MINUTE + i * 30 * SECOND, f"c{i}", "coats")
        for i in range(5)
    ]
    return items


def run_with_watermark(items, ooo):
    """Arrival order as given; watermark = max seen - ooo - 1, wakes as in an engine."""
    core = Core(CoreSettings(max_out_of_orderness=ooo))
    state, outs, timers, max_seen = None, [], set(), None
    for item in items:
        wm = None if max_seen is None else max_seen - ooo - 1
        state, out, wake = core.step(state, item, wm)
        outs += out
        timers.update(wake)
        t = item.occurred_at if hasattr(item, "occurred_at") else item.updated_at
        max_seen = t if max_seen is None else max(max_seen, t)
        wm = max_seen - ooo - 1
        while state is not None and timers and min(timers) <= wm:
            timers.discard(min(timers))
            state, out, wake = core.wake(state, wm)
            outs += out
            timers.update(wake)
    state, out, _ = core.wake(state, T0 + 10 * DAY)
    return [o for o in outs + out if o[0] in (PAYLOAD, AUDIT)]


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_any_arrival_order_within_the_bound_gives_identical_outputs(rnd: random.Random):
    items = journey()
    ooo = 2 * MINUTE
    expected = run_with_watermark(sorted(items, key=lambda i: getattr(i, "occurred_at", 0)), ooo)
    # Bounded shuffle: each item may arrive after items up to `ooo` later than it.
    keyed = [
        (getattr(i, "occurred_at", T0 - HOUR) + rnd.randint(0, ooo), n, i)
        for n, i in enumerate(items)
    ]
    shuffled = [i for _, _, i in sorted(keyed)]
    assert run_with_watermark(shuffled, ooo) == expected
    assert any(k == PAYLOAD for k, _ in expected)


def test_revenue_counts_order_lines_not_the_order_total_per_line():
    from tests.builders import event, product
    from transforms.model import PURCHASE

    core = Core()
    lines = [
        event(PURCHASE, T0, product=product("a", price=10.0), quantity=2, order_id="o1",
              order_total=35.0),
        event(PURCHASE, T0, product=product("b", price=15.0), quantity=1, order_id="o1",
              order_total=35.0),
        event(PURCHASE, T0 + MINUTE, order_id="o2", order_total=5.0),
    ]
    state, _ = drive(core, [profile(), *lines], T0 + HOUR)
    features = state.windows.features(T0 + HOUR)
    assert (features.purchases_30d, features.revenue_30d) == (3, 40.0)
