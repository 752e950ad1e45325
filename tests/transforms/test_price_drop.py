"""Price drop in the customer core at named instants (transforms/triggers/price_drop.py): the
signal's time, a purchase after the interest, the cooldown and its expiry, policy, late."""

from __future__ import annotations

from tests.builders import HOUR, MINUTE, T0, add, consent, profile, purchase, view
from tests.transforms.drive import decisions, payloads
from transforms.catalog_changes import BACK_IN_STOCK, PRICE_DROP, CatalogSignal
from transforms.core import Core
from transforms.model import AUDIT, DROPPED, PAYLOAD
from transforms.product_stage import signal_watermark
from transforms.settings import DAY, CoreSettings

SIGNAL_AT = T0 + 2 * DAY
INTEREST_AT = T0 + HOUR
COOLDOWN = 7 * DAY


def signal(t: int = SIGNAL_AT, kind: str = PRICE_DROP, pid: str = "p1", change: str = "",
           interest_at: int = INTEREST_AT) -> CatalogSignal:
    change = change or f"ch-{t}"
    return CatalogSignal(f"{pid}:{change}:{kind}", "c1", kind, t, pid, change, interest_at,
                         100.0 if kind == PRICE_DROP else None, 80.0, "shoes")


def run(core, items, until, state=None):
    """Step items (signals with their own watermark, as every adapter), wake at `until`."""
    outputs = []
    for item in items:
        wm = signal_watermark(item) if isinstance(item, CatalogSignal) else None
        state, out, _ = core.step(state, item, wm)
        outputs += out
    state, out, _ = core.wake(state, until)
    outputs = [(k, core.compose(r)) if k == PAYLOAD else (k, r) for k, r in outputs + out]
    return state, outputs


def fired(outputs, kind=PRICE_DROP):
    return [(d[1], d[2], d[3]) for d in decisions(outputs) if d[0] == kind]


def dropped(outputs):
    return [r for k, r in outputs if k == DROPPED and ":" in r and not r.startswith("evicted")]


def test_fires_at_the_signal_time_with_the_product_and_prices():
    core = Core()
    _, out = run(core, [profile(), view(INTEREST_AT), signal()], SIGNAL_AT)
    assert fired(out) == [("p1", SIGNAL_AT, "emitted")]
    (p,) = payloads(out)
    assert p.trigger.evidence == ["p1"] and p.trigger.fired_at == SIGNAL_AT
    assert p.source_event_ids == [f"ch-{SIGNAL_AT}"]
    assert not p.fallback, p.fallback_reason
    assert "80.00" in p.text and "100.00" in p.text


def test_not_before_the_signal_time():
    _, out = run(Core(), [profile(), signal()], SIGNAL_AT - 1)
    assert fired(out) == []


def test_a_purchase_after_the_interest_cancels_even_at_the_signal_instant():
    _, out = run(Core(), [profile(), view(INTEREST_AT), purchase(SIGNAL_AT), signal()], SIGNAL_AT)
    assert fired(out) == []
    assert dropped(out) == [f"{PRICE_DROP}:bought"]
    _, out = run(Core(), [profile(), purchase(INTEREST_AT - 1), signal()], SIGNAL_AT)
    assert fired(out) == [("p1", SIGNAL_AT, "emitted")]


def test_cooldown_per_product_until_it_expires():
    core = Core()
    items = [profile(), signal(), signal(SIGNAL_AT + COOLDOWN - 1),
             signal(SIGNAL_AT + COOLDOWN - 1, pid="p2")]
    state, out = run(core, items, SIGNAL_AT + COOLDOWN)
    assert [k for k, _, _ in fired(out)] == ["p1", "p2"]
    assert dropped(out) == [f"{PRICE_DROP}:cooldown"]
    state, out = run(core, [profile(SIGNAL_AT + COOLDOWN), signal(SIGNAL_AT + COOLDOWN + DAY)],
                     SIGNAL_AT + COOLDOWN + DAY, state)
    assert fired(out) == [("p1", SIGNAL_AT + COOLDOWN + DAY, "emitted")]


def test_the_slot_expires_with_the_cooldown_and_the_state_goes():
    core = Core()
    state, _ = run(core, [profile(), signal()], SIGNAL_AT)
    assert state is not None and state.triggers[PRICE_DROP] == {"p1": SIGNAL_AT}
    state, _, _ = core.wake(state, SIGNAL_AT + COOLDOWN + 2 * HOUR)  # trimmed at most hourly
    assert state is not None and PRICE_DROP not in state.triggers
    state, _, _ = core.wake(state, SIGNAL_AT + 60 * DAY)
    assert state is None


def test_hostile_many_products_keep_bounded_cooldowns():
    core = Core(CoreSettings(max_signal_products=16, max_per_day=1000, max_per_type_per_day=1000))
    items = [profile()] + [signal(SIGNAL_AT + i * MINUTE, pid=f"p{i}") for i in range(40)]
    state, out = run(core, items, SIGNAL_AT + HOUR)
    assert len(state.triggers[PRICE_DROP]) <= 16
    assert [r for k, r in out if k == DROPPED].count(f"evicted:{PRICE_DROP}") == 40 - len(
        state.triggers[PRICE_DROP])


def test_policy_applies_consent_and_priority():
    _, out = run(Core(), [profile(), consent(SIGNAL_AT - 1, False), signal()], SIGNAL_AT)
    assert fired(out) == [("p1", SIGNAL_AT, "suppressed:no_consent")]
    items = [profile(), add(SIGNAL_AT - HOUR, "p9"), signal(), signal(kind=BACK_IN_STOCK)]
    _, out = run(Core(), items, SIGNAL_AT)
    assert fired(out, "cart_abandonment") == [(fired(out, "cart_abandonment")[0][0], SIGNAL_AT,
                                              "emitted")]
    assert fired(out, BACK_IN_STOCK) == [("p1", SIGNAL_AT, "suppressed:priority")]
    assert fired(out) == [("p1", SIGNAL_AT, "suppressed:priority")]


def test_a_signal_behind_the_customer_is_audited_late_not_lost():
    core = Core()
    state, _ = run(core, [profile()], SIGNAL_AT + HOUR)
    state, out, _ = core.step(state, signal(), signal_watermark(signal()))
    assert [(a.type, a.decision) for k, a in out if k == AUDIT] == [(PRICE_DROP, "suppressed:late")]


def test_a_duplicate_signal_is_dropped():
    _, out = run(Core(), [profile(), signal(), signal()], SIGNAL_AT)
    assert fired(out) == [("p1", SIGNAL_AT, "emitted")]
    assert ("dropped", "duplicate") in out


def test_a_signal_is_not_activity():
    core = Core()
    state, _ = run(core, [profile(), signal()], SIGNAL_AT)
    assert state.windows.last_activity is None
