"""Win-back at named instants: 30 d after the last activity, once per lapse, bounded state."""

from tests.builders import HOUR, MINUTE, T0, consent, event, profile, purchase, view
from tests.transforms.drive import decisions, drive
from transforms.core import Core
from transforms.model import EMAIL_OPEN
from transforms.settings import DAY, CoreSettings
from transforms.triggers.win_back import TYPE

DELAY = 30 * DAY
DEADLINE = T0 + DELAY


def fired(outputs):
    return [(d[1], d[2], d[3]) for d in decisions(outputs) if d[0] == TYPE]


def test_fires_at_exactly_30_days_after_the_purchase_with_profile_and_consent_still_held():
    # The profile is stamped an hour before the purchase: 30 d after it, the profile TTL has
    # passed, yet the armed win-back keeps the profile and consent until it fires.
    state, out = drive(Core(), [profile(T0 - HOUR), purchase(T0)], DEADLINE)
    assert fired(out) == [(str(T0), DEADLINE, "emitted")]
    assert state is not None and TYPE not in state.triggers


def test_not_one_ms_before():
    state, out = drive(Core(), [profile(), purchase(T0)], DEADLINE - 1)
    assert fired(out) == []
    assert state is not None and state.triggers[TYPE] == T0  # only the last activity is held


def test_activity_moves_the_deadline_and_activity_at_the_deadline_counts():
    items = [profile(), purchase(T0), view(T0 + DAY, "p9"), event(EMAIL_OPEN, DEADLINE + DAY)]
    _, out = drive(Core(), items, T0 + 90 * DAY)
    assert fired(out) == [(str(DEADLINE + DAY), DEADLINE + DAY + DELAY, "emitted")]


def test_a_consent_change_is_not_activity():
    items = [profile(), purchase(T0), consent(T0 + DAY, True)]
    _, out = drive(Core(), items, DEADLINE)
    assert fired(out) == [(str(T0), DEADLINE, "emitted")]


def test_no_purchase_no_win_back():
    _, out = drive(Core(), [profile(), view(T0, "p1")], T0 + 90 * DAY)
    assert fired(out) == []


def test_once_per_lapse_a_return_without_purchase_does_not_rearm():
    core = Core()
    state, out = drive(core, [profile(), purchase(T0)], DEADLINE)
    assert len(fired(out)) == 1
    state, out = drive(core, [profile(DEADLINE + DAY), view(DEADLINE + DAY, "p1")],
                       DEADLINE + 70 * DAY, state)
    assert fired(out) == []
    state, out = drive(core, [profile(DEADLINE + 71 * DAY), purchase(DEADLINE + 71 * DAY)],
                       DEADLINE + 71 * DAY + DELAY, state)
    assert fired(out) == [(str(DEADLINE + 71 * DAY), DEADLINE + 71 * DAY + DELAY, "emitted")]


def test_profile_kept_while_armed_when_the_profile_ttl_is_shorter():
    core = Core(CoreSettings(profile_ttl=10 * DAY, win_back_delay=40 * DAY))
    state, out = drive(core, [profile(T0 - MINUTE), purchase(T0)], T0 + 20 * DAY)
    assert state is not None and state.profile is not None  # past its TTL, kept: armed
    state, out = drive(core, [], T0 + 40 * DAY, state)
    assert fired(out) == [(str(T0), T0 + 40 * DAY, "emitted")]
    state, _, _ = core.wake(state, T0 + 40 * DAY + 2 * HOUR)
    assert state is None or state.profile is None  # gone at the first purge after the fire


def test_delay_is_a_setting_and_it_can_be_disabled():
    _, out = drive(Core(CoreSettings(win_back_delay=DAY)), [profile(), purchase(T0)], T0 + DAY)
    assert [f[1] for f in fired(out)] == [T0 + DAY]
    _, out = drive(Core(CoreSettings(win_back_enabled=False)), [profile(), purchase(T0)],
                   T0 + 90 * DAY)
    assert fired(out) == []


def test_the_state_is_none_once_nothing_can_fire():
    core = Core()
    state, _ = drive(core, [profile(), purchase(T0)], DEADLINE)
    state, _, _ = core.wake(state, DEADLINE + 31 * DAY)
    assert state is None
