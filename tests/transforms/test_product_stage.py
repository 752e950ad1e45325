"""The product-keyed stage at named instants: interest window, purchases, drops, restocks,
dedup, caps and expiry (transforms/product_stage.py)."""

from __future__ import annotations

import pickle

from tests.builders import HOUR, MINUTE, T0, add, purchase, view
from transforms.catalog_changes import BACK_IN_STOCK, PRICE_DROP, CatalogChange
from transforms.clock import END_OF_TIME
from transforms.model import DEAD_LETTER, DROPPED, R_LATE
from transforms.product_stage import SIGNAL, ProductStage, signal_watermark
from transforms.settings import DAY, CoreSettings

WINDOW = 14 * DAY
CHANGE_AT = T0 + 3 * DAY


def change(t: int, price: float | None = None, in_stock: bool | None = None, cid: str = "",
           pid: str = "p1") -> CatalogChange:
    return CatalogChange(cid or f"ch-{t}-{price}-{in_stock}", pid, t, price, in_stock, "shoes")


def drive(stage, items, until, state=None, watermark=None):
    outputs = []
    for item in items:
        state, out, _ = stage.step(state, item, watermark)
        outputs += out
    state, out, wake = stage.wake(state, until)
    return state, outputs + out, wake


def signals(outputs):
    return [(s.event_type, s.customer_id, s.occurred_at) for k, s in outputs if k == SIGNAL]


def dropped(outputs):
    return [r for k, r in outputs if k == DROPPED]


def priced(*extra, settings=None):
    """A product priced 100 and out of stock at T0, then `extra`."""
    return [change(T0, 100.0, False, "base"), *extra]


def test_a_drop_of_exactly_the_minimum_percent_signals_each_interested_customer():
    stage = ProductStage(CoreSettings())
    items = priced(view(T0 + HOUR, cid="a"), add(T0 + 2 * HOUR, cid="b"), change(CHANGE_AT, 90.0))
    _, out, _ = drive(stage, items, CHANGE_AT)
    assert signals(out) == [(PRICE_DROP, "a", CHANGE_AT), (PRICE_DROP, "b", CHANGE_AT)]
    sig = [s for k, s in out if k == SIGNAL][0]
    assert (sig.old_price, sig.new_price, sig.interest_at) == (100.0, 90.0, T0 + HOUR)
    assert signal_watermark(sig) == CHANGE_AT - 1


def test_a_drop_just_below_the_minimum_and_a_rise_are_not_drops():
    stage = ProductStage(CoreSettings())
    items = priced(view(T0 + HOUR, cid="a"), change(CHANGE_AT, 90.01),
                   change(CHANGE_AT + HOUR, 120.0))
    _, out, _ = drive(stage, items, CHANGE_AT + DAY)
    assert signals(out) == []


def test_nothing_before_the_watermark_reaches_the_change():
    stage = ProductStage(CoreSettings())
    _, out, wake = drive(stage, priced(view(T0 + HOUR, cid="a"), change(CHANGE_AT, 50.0)),
                         CHANGE_AT - 1)
    assert signals(out) == []
    assert wake == [CHANGE_AT]


def test_interest_exactly_the_window_before_the_change_is_too_old():
    stage = ProductStage(CoreSettings())
    at = T0 + HOUR
    items = priced(view(at, cid="old"), view(at + 1, cid="new"), change(at + WINDOW, 50.0))
    _, out, _ = drive(stage, items, at + WINDOW)
    assert signals(out) == [(PRICE_DROP, "new", at + WINDOW)]


def test_a_purchase_ends_the_interest_and_a_later_view_renews_it():
    stage = ProductStage(CoreSettings())
    items = priced(view(T0 + HOUR, cid="a"), purchase(T0 + 2 * HOUR, cid="a"),
                   view(T0 + HOUR, cid="b"), purchase(T0 + 2 * HOUR, cid="b"),
                   view(T0 + 3 * HOUR, cid="b"), change(CHANGE_AT, 50.0))
    _, out, _ = drive(stage, items, CHANGE_AT)
    assert signals(out) == [(PRICE_DROP, "b", CHANGE_AT)]


def test_a_purchase_at_the_change_instant_comes_first():
    stage = ProductStage(CoreSettings())
    items = priced(view(T0 + HOUR, cid="a"), change(CHANGE_AT, 50.0), purchase(CHANGE_AT, cid="a"))
    _, out, _ = drive(stage, items, CHANGE_AT)
    assert signals(out) == []


def test_a_restock_signals_but_in_stock_to_in_stock_and_unknown_to_in_stock_do_not():
    stage = ProductStage(CoreSettings())
    items = priced(view(T0 + HOUR, cid="a"), change(CHANGE_AT, in_stock=True),
                   change(CHANGE_AT + HOUR, in_stock=True))
    _, out, _ = drive(stage, items, CHANGE_AT + DAY)
    assert signals(out) == [(BACK_IN_STOCK, "a", CHANGE_AT)]
    unknown = [view(T0 + HOUR, cid="a"), change(CHANGE_AT, 80.0, True, "first")]
    _, out, _ = drive(ProductStage(CoreSettings()), unknown, CHANGE_AT)
    assert signals(out) == []


def test_a_drop_and_a_restock_at_once_signal_both():
    stage = ProductStage(CoreSettings())
    items = priced(view(T0 + HOUR, cid="a"), change(CHANGE_AT, 50.0, True))
    _, out, _ = drive(stage, items, CHANGE_AT)
    assert signals(out) == [(BACK_IN_STOCK, "a", CHANGE_AT), (PRICE_DROP, "a", CHANGE_AT)]


def test_a_duplicate_change_id_is_dropped_even_after_processing():
    stage = ProductStage(CoreSettings())
    state, out, _ = drive(stage, priced(view(T0 + HOUR, cid="a"), change(CHANGE_AT, 50.0, cid="x"),
                                        change(CHANGE_AT, 50.0, cid="x")), CHANGE_AT)
    assert len(signals(out)) == 1
    assert dropped(out) == ["duplicate_change"]
    state, out, _ = stage.step(state, change(CHANGE_AT + HOUR, 10.0, cid="x"), CHANGE_AT)
    assert dropped(out) == ["duplicate_change"]


def test_a_late_change_is_a_dead_letter_and_a_late_event_is_ignored():
    stage = ProductStage(CoreSettings())
    state, out, _ = drive(stage, priced(), CHANGE_AT)
    state, out, _ = stage.step(state, change(CHANGE_AT, 10.0, cid="late"), None)
    ((kind, dead),) = out
    assert kind == DEAD_LETTER and dead.reason == R_LATE
    state, out, _ = stage.step(state, view(CHANGE_AT - 1, cid="a"), CHANGE_AT + 5)
    assert out == [] and state.pending == [] and "a" not in state.interested


def test_hostile_flood_of_viewers_keeps_the_newest_max_interested():
    stage = ProductStage(CoreSettings(max_interested=32))
    viewers = [view(T0 + HOUR + i * MINUTE, cid=f"c{i:03d}") for i in range(100)]
    state, out, _ = drive(stage, priced(*viewers, change(CHANGE_AT, 50.0)), CHANGE_AT)
    sent = [c for _, c, _ in signals(out)]
    assert len(sent) <= 32 and sent == sorted(sent) and sent[-1] == "c099"
    assert dropped(out).count("evicted:interested") == 100 - len(sent)
    assert len(state.interested) <= 32


def test_hostile_flood_of_change_ids_is_capped():
    stage = ProductStage(CoreSettings(max_change_ids=16))
    changes = [change(T0 + i, 100.0 + i, cid=f"x{i}") for i in range(50)]
    state, out, _ = drive(stage, changes, T0 + HOUR)
    assert len(state.seen) <= 16
    assert dropped(out).count("evicted:change_ids") == 50 - len(state.seen)


def test_interest_expires_and_the_state_is_none_once_all_has_expired():
    settings = CoreSettings()
    stage = ProductStage(settings)
    state, _, wake = drive(stage, priced(view(T0 + HOUR, cid="a")), T0 + HOUR)
    assert state is not None and wake
    state, _, _ = stage.wake(state, T0 + HOUR + WINDOW)
    assert state is not None and state.interested == {} and state.price == 100.0
    state, _, _ = stage.wake(state, T0 + settings.catalog_state_ttl)
    assert state is None


def test_after_the_price_expired_a_lower_price_is_no_drop():
    settings = CoreSettings()
    stage = ProductStage(settings)
    later = T0 + settings.catalog_state_ttl + HOUR
    state, _, _ = drive(stage, priced(), T0 + settings.catalog_state_ttl)
    state, out, _ = drive(stage, [view(later - HOUR, cid="a"), change(later, 1.0)], later, state)
    assert signals(out) == []


def test_end_of_time_clears_everything():
    stage = ProductStage(CoreSettings())
    state, _, _ = drive(stage, priced(view(T0 + HOUR, cid="a")), END_OF_TIME)
    assert state is None


def test_state_pickles():
    stage = ProductStage(CoreSettings())
    state, _, _ = drive(stage, priced(view(T0 + HOUR, cid="a"), change(CHANGE_AT, 50.0)), T0)
    again = pickle.loads(pickle.dumps(state))
    assert again.pending == state.pending and again.interested == state.interested


def test_any_arrival_order_gives_the_same_signals():
    import random

    items = priced(view(T0 + HOUR, cid="a"), add(T0 + 2 * HOUR, cid="b"),
                   purchase(T0 + 3 * HOUR, cid="a"), view(T0 + 4 * HOUR, cid="c"),
                   change(CHANGE_AT, 80.0, True, "drop"), change(CHANGE_AT, 80.0, True, "drop"),
                   view(CHANGE_AT, cid="d"), purchase(CHANGE_AT, cid="b"),
                   change(CHANGE_AT + HOUR, in_stock=False), change(CHANGE_AT + 2 * HOUR, 60.0),
                   change(CHANGE_AT + 3 * HOUR, in_stock=True))
    want = None
    rng = random.Random(5)
    for _ in range(30):
        shuffled = items[:]
        rng.shuffle(shuffled)
        _, out, _ = drive(ProductStage(CoreSettings()), shuffled, END_OF_TIME)
        got = [(s.event_type, s.customer_id, s.occurred_at, s.old_price, s.new_price)
               for k, s in out if k == SIGNAL]
        want = got if want is None else want
        assert got == want
    assert [(k, c) for k, c, *_ in want] == [
        (BACK_IN_STOCK, "c"), (BACK_IN_STOCK, "d"), (PRICE_DROP, "c"), (PRICE_DROP, "d"),
        (PRICE_DROP, "c"), (PRICE_DROP, "d"), (BACK_IN_STOCK, "c"), (BACK_IN_STOCK, "d")]


def test_interest_expires_oldest_first_at_the_exact_instant():
    # The stage trims interest from the oldest end (times never decrease in its order): a
    # renewed interest moves to the young end, and each expires exactly `window` after it.
    stage = ProductStage(CoreSettings())
    a1, b, a2 = T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR
    state, _, wake = drive(stage, [view(a2, cid="a"), view(b, cid="b"), view(a1, cid="a")], a2)
    assert list(state.interested.items()) == [("b", b), ("a", a2)]
    assert b + WINDOW <= wake[0] < b + WINDOW + HOUR  # the oldest's expiry, on the hour grid
    state, _, _ = stage.wake(state, b + WINDOW - 1)
    assert list(state.interested.items()) == [("b", b), ("a", a2)]
    state, _, wake = stage.wake(state, b + WINDOW)
    assert list(state.interested.items()) == [("a", a2)]
    assert a2 + WINDOW <= wake[0] < a2 + WINDOW + HOUR
    state, _, _ = stage.wake(state, a2 + WINDOW - 1)
    assert state.interested == {"a": a2}
    state, out, wake = stage.wake(state, a2 + WINDOW)
    assert state is None and out == [] and wake == []


# ------------------------------------------------------------------ folding interest in lazily


def _traffic(seed: int, n: int = 400) -> list:
    """One product's views, adds and purchases by 40 customers over days, in time order, with
    changes (drops, rises, restocks) among them: enough to evict (cap 8) and expire (window
    6 h) interest again and again."""
    import random

    rng = random.Random(seed)
    items, t, price = [], T0, 100.0
    items.append(change(t, price, False, "base"))
    for i in range(n):
        # bursts, and gaps of a few hours: interest expires between some of them
        t += rng.randrange(2, 8) * HOUR if rng.random() < 0.03 else rng.randrange(1, 40) * MINUTE
        roll = rng.random()
        if roll < 0.08:
            price = round(price * rng.choice((0.5, 0.8, 1.3)), 2)
            items.append(change(t, price, rng.choice((True, False, None)), f"ch{i}"))
            continue
        make = view if roll < 0.7 else add if roll < 0.9 else purchase
        items.append(make(t, cid=f"c{rng.randrange(40):02d}"))
    return items


def _run(stage, items, schedule):
    """Items stepped in order with the watermark just behind each; wakes per `schedule`:
    "each" (at every item's time, as before interest was folded lazily), "timers" (when the
    stage's one timer is due, as every runner does: pipelines/keyed.next_timer), "end"."""
    from pipelines.keyed import next_timer

    state, timer, out = None, None, []
    for item in items:
        t = item.occurred_at
        if schedule == "timers" and timer is not None and timer <= t - 1:
            state, o, wake_at = stage.wake(state, t - 1)
            out += o
            timer = next_timer(None, state, wake_at, woke=True)
        state, o, wake_at = stage.step(state, item, t - 1)
        out += o
        timer = next_timer(timer, state, wake_at)
        if schedule == "each":
            state, o, _ = stage.wake(state, t)
            out += o
    state, o, _ = stage.wake(state, END_OF_TIME)
    return out + o


def test_outputs_do_not_depend_on_when_interest_is_folded_in():
    settings = CoreSettings(max_interested=8, interest_window=6 * HOUR)
    for seed in range(6):
        items = _traffic(seed)
        runs = {s: _run(ProductStage(settings), items, s) for s in ("each", "timers", "end")}
        sigs = {s: [(r.event_id, r.customer_id, r.interest_at) for k, r in out if k == SIGNAL]
                for s, out in runs.items()}
        drops = {s: sorted(dropped(out)) for s, out in runs.items()}
        assert sigs["each"] and "evicted:interested" in drops["each"]
        assert sigs["timers"] == sigs["each"] == sigs["end"]
        assert drops["timers"] == drops["each"] == drops["end"]


def test_a_hot_product_is_woken_per_fold_not_per_view():
    FOLD_AFTER = CoreSettings().interest_fold  # noqa: N806

    stage = ProductStage(CoreSettings(max_interested=100 * FOLD_AFTER))
    wakes, state, timer, most = 0, None, None, 0
    for i in range(10 * FOLD_AFTER):
        t = T0 + i * 1000
        if timer is not None and timer <= t - 1:
            state, _, wake_at = stage.wake(state, t - 1)
            wakes += 1
            timer = min(wake_at) if wake_at else None
        state, _, wake_at = stage.step(state, view(t, cid=f"c{i}"), t - 1)
        if wake_at and (timer is None or min(wake_at) < timer):
            timer = min(wake_at)
        most = max(most, len(state.pending))
    assert wakes <= 10 and most <= FOLD_AFTER + 1
    assert len(state.interested) + len(state.pending) == 10 * FOLD_AFTER


def test_a_buffered_view_is_kept_as_its_slim_interest():
    from transforms.product_stage import Interest, interest_of

    stage = ProductStage(CoreSettings())
    event = view(T0, cid="a")
    state, _, wake_at = stage.step(None, event, T0 - 1)
    entry = state.pending[-1]
    assert entry[3] == interest_of(event) == Interest(event.event_id, "a", "p1", T0, False)
    whole = (T0, 0, event.event_id, event)   # the entry, had the stage kept the event
    assert len(pickle.dumps(entry)) < 0.7 * len(pickle.dumps(whole))
    assert wake_at == [stage.buffered_wake(entry)] and wake_at[0] >= T0 + WINDOW
    # the same as the event itself, stepped as its Interest (what the Flink decoder sends)
    again, _, _ = stage.step(None, interest_of(event), T0 - 1)
    assert again.pending == state.pending


def test_a_state_from_before_interest_was_slim_still_wakes():
    # A savepoint's ProductState may hold buffered events whole (the earlier form).
    stage = ProductStage(CoreSettings())
    state, _, _ = drive(stage, priced(), T0)
    event = view(T0 + HOUR, cid="a")
    state.pending.append((event.occurred_at, 0, event.event_id, event))
    state.pending.append((CHANGE_AT, 1, "drop", change(CHANGE_AT, 50.0, cid="drop")))
    _, out, _ = stage.wake(pickle.loads(pickle.dumps(state)), CHANGE_AT)
    assert signals(out) == [(PRICE_DROP, "a", CHANGE_AT)]
