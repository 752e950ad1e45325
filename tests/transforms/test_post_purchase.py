"""Post-purchase cross-sell at named instants: the deadline, 1 ms before, re-arming, expiry."""

from tests.builders import HOUR, MINUTE, T0, profile, purchase, view
from tests.transforms.drive import decisions, drive, payloads
from transforms.core import Core
from transforms.settings import DAY, CoreSettings
from transforms.triggers.post_purchase import EVICTED_ITEMS, TYPE, items_key

DELAY = 3 * DAY
DEADLINE = T0 + DELAY


def fired(outputs):
    return [(d[1], d[2], d[3]) for d in decisions(outputs) if d[0] == TYPE]


def test_fires_at_exactly_the_deadline_with_the_purchases_as_evidence():
    items = [profile(), purchase(T0, "p2"), purchase(T0, "p1")]
    _, out = drive(Core(), items, DEADLINE + HOUR)
    assert fired(out) == [(items_key(["p1", "p2"]), DEADLINE, "emitted")]
    (payload,) = [p for p in payloads(out) if p.trigger.type == TYPE]
    assert payload.trigger.evidence == ["p1", "p2"]
    assert payload.trigger.source_event_ids == sorted(e.event_id for e in items[1:])
    # No catalog: the products are rendered from what the purchase events said, not a fallback.
    assert not payload.fallback and "p1" in payload.text


def test_not_one_ms_before_the_deadline():
    state, out = drive(Core(), [profile(), purchase(T0)], DEADLINE - 1)
    assert fired(out) == []
    assert state is not None and state.triggers[TYPE][0] == DEADLINE


def test_a_later_purchase_rearms_from_its_own_time_and_adds_its_product():
    items = [profile(), purchase(T0, "p1"), purchase(T0 + DAY, "p2")]
    _, out = drive(Core(), items, T0 + 5 * DAY)
    assert fired(out) == [(items_key(["p1", "p2"]), T0 + DAY + DELAY, "emitted")]


def test_a_purchase_at_exactly_the_deadline_rearms():
    items = [profile(), purchase(T0, "p1"), purchase(DEADLINE, "p2")]
    _, out = drive(Core(), items, DEADLINE + DELAY + HOUR)
    assert fired(out) == [(items_key(["p1", "p2"]), DEADLINE + DELAY, "emitted")]


def test_other_activity_does_not_cancel():
    items = [profile(), purchase(T0), view(T0 + DAY, "p9")]
    _, out = drive(Core(), items, DEADLINE)
    assert [f[1] for f in fired(out)] == [DEADLINE]


def test_fires_once_and_the_slot_is_gone():
    state, out = drive(Core(), [profile(), purchase(T0)], DEADLINE)
    assert len(fired(out)) == 1 and state is not None and state.triggers[TYPE][0] is None
    state, _, _ = Core().wake(state, DEADLINE + 2 * HOUR)  # the fired slot goes at a purge
    assert state is not None and TYPE not in state.triggers
    _, out2 = drive(Core(), [], DEADLINE + 10 * DAY, state)
    assert fired(out2) == []


def test_items_are_capped_the_oldest_evicted():
    core = Core(CoreSettings(post_purchase_max_items=4))
    items = [profile()] + [purchase(T0 + i * MINUTE, f"p{i}") for i in range(5)]
    state, out = drive(core, items, T0 + HOUR)
    assert state is not None and list(state.triggers[TYPE][1]) == ["p1", "p2", "p3", "p4"]
    assert ("dropped", EVICTED_ITEMS) in out


def test_settings_delay_and_disable():
    items = [profile(), purchase(T0)]
    _, out = drive(Core(CoreSettings(post_purchase_delay=HOUR)), items, T0 + HOUR)
    assert [f[1] for f in fired(out)] == [T0 + HOUR]
    _, out = drive(Core(CoreSettings(post_purchase_enabled=False)), items, DEADLINE)
    assert fired(out) == []


def test_the_state_expires_after_the_fire():
    core = Core()
    state, _ = drive(core, [profile(), purchase(T0)], DEADLINE)
    # Everything (windows, profile, purchases) has a time limit: 60 d on, nothing is left.
    state, _, _ = core.wake(state, T0 + 70 * DAY)
    assert state is None
