"""Back in stock in the customer core at named instants (transforms/triggers/back_in_stock.py)."""

from __future__ import annotations

from tests.builders import HOUR, T0, profile, purchase, view
from tests.transforms.drive import payloads
from tests.transforms.test_price_drop import INTEREST_AT, SIGNAL_AT, dropped, fired, run, signal
from transforms.catalog_changes import BACK_IN_STOCK
from transforms.core import Core
from transforms.settings import DAY, CoreSettings

COOLDOWN = 7 * DAY


def test_fires_at_the_signal_time_with_the_product():
    _, out = run(Core(), [profile(), view(INTEREST_AT), signal(kind=BACK_IN_STOCK)], SIGNAL_AT)
    assert fired(out, BACK_IN_STOCK) == [("p1", SIGNAL_AT, "emitted")]
    (p,) = payloads(out)
    assert p.trigger.type == BACK_IN_STOCK and p.trigger.evidence == ["p1"]
    assert not p.fallback, p.fallback_reason
    assert "back in stock" in p.text


def test_not_one_ms_before():
    _, out = run(Core(), [profile(), signal(kind=BACK_IN_STOCK)], SIGNAL_AT - 1)
    assert fired(out, BACK_IN_STOCK) == []


def test_bought_after_the_interest_cancels():
    items = [profile(), view(INTEREST_AT), purchase(INTEREST_AT + HOUR),
             signal(kind=BACK_IN_STOCK)]
    _, out = run(Core(), items, SIGNAL_AT)
    assert fired(out, BACK_IN_STOCK) == []
    assert dropped(out) == [f"{BACK_IN_STOCK}:bought"]


def test_cooldown_is_its_own_setting_and_expires():
    core = Core(CoreSettings(back_in_stock_cooldown=DAY))
    items = [profile(), signal(kind=BACK_IN_STOCK), signal(SIGNAL_AT + DAY - 1, BACK_IN_STOCK)]
    state, out = run(core, items, SIGNAL_AT + DAY)
    assert fired(out, BACK_IN_STOCK) == [("p1", SIGNAL_AT, "emitted")]
    assert state.triggers[BACK_IN_STOCK] == {"p1": SIGNAL_AT}
    assert dropped(out) == [f"{BACK_IN_STOCK}:cooldown"]
    # The core trims at most hourly: the slot is gone at the first purge after its end.
    state, _, _ = core.wake(state, SIGNAL_AT + DAY + 2 * HOUR)
    assert state is not None and BACK_IN_STOCK not in state.triggers


def test_preview_context_without_prices_renders():
    _, out = run(Core(), [profile(), signal(kind=BACK_IN_STOCK)], SIGNAL_AT)
    (p,) = payloads(out)
    assert p.subject and T0 < p.trigger.fired_at
