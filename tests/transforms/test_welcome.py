"""Welcome at named instants: the deadline, 1 ms before, once per customer, expiry of the mark."""

from tests.builders import HOUR, MINUTE, T0, add, consent, event, profile
from tests.transforms.drive import decisions, drive
from transforms.core import Core
from transforms.model import PAGE_VIEW
from transforms.settings import DAY, CoreSettings
from transforms.triggers.welcome import CONSENT, SIGNUP, TYPE

DELAY = 10 * MINUTE
DEADLINE = T0 + DELAY


def sign_up(t, **kw):
    return event(PAGE_VIEW, t, properties={"action": "sign_up"}, **kw)


def fired(outputs):
    return [(d[1], d[2], d[3]) for d in decisions(outputs) if d[0] == TYPE]


def test_a_first_consent_event_welcomes_at_exactly_the_delay():
    _, out = drive(Core(), [profile(consent=False), consent(T0, True)], DEADLINE)
    assert fired(out) == [(CONSENT, DEADLINE, "emitted")]


def test_not_one_ms_before():
    state, out = drive(Core(), [profile(consent=False), consent(T0, True)], DEADLINE - 1)
    assert fired(out) == []
    assert state is not None and state.triggers[TYPE] == (DEADLINE, None, CONSENT)


def test_a_sign_up_welcomes_and_consent_just_after_it_is_there():
    items = [profile(T0 - HOUR, consent=False), sign_up(T0), consent(T0 + MINUTE, True)]
    _, out = drive(Core(), items, T0 + DAY)
    assert fired(out) == [(SIGNUP, DEADLINE, "emitted")]


def test_a_sign_up_without_consent_waits_for_the_grant():
    items = [profile(consent=False), sign_up(T0), consent(T0 + HOUR, True)]
    _, out = drive(Core(), items, T0 + DAY)
    assert fired(out) == [(CONSENT, T0 + HOUR + DELAY, "emitted")]


def test_a_revocation_before_the_deadline_cancels():
    items = [profile(consent=False), consent(T0, True), consent(T0 + MINUTE, False)]
    state, out = drive(Core(), items, T0 + DAY)
    assert fired(out) == []
    assert state is not None and TYPE not in state.triggers


def test_only_once_per_customer_even_after_a_revoke_and_regrant():
    items = [profile(consent=False), consent(T0, True), consent(T0 + HOUR, False),
             consent(T0 + 2 * HOUR, True), sign_up(T0 + 3 * HOUR)]
    _, out = drive(Core(), items, T0 + 3 * DAY)
    assert fired(out) == [(CONSENT, DEADLINE, "emitted")]


def test_a_first_profile_with_consent_is_no_first_grant_by_default():
    _, out = drive(Core(), [profile(T0)], T0 + DAY)
    assert fired(out) == []
    _, out = drive(Core(CoreSettings(welcome_on_profile=True)), [profile(T0)], T0 + DAY)
    assert fired(out) == [(CONSENT, DEADLINE, "emitted")]


def test_a_profile_turning_a_revocation_into_a_grant_welcomes():
    items = [profile(T0 - HOUR, consent=False), profile(T0, consent=True)]
    _, out = drive(Core(), items, T0 + DAY)
    assert fired(out) == [(CONSENT, DEADLINE, "emitted")]


def test_a_late_grant_arms_from_the_customers_last_touch_not_its_own_past_time():
    core = Core()
    state, _ = drive(core, [profile(T0 - HOUR, consent=False), add(T0)], T0 + HOUR)
    late = consent(T0 - 30 * MINUTE, True)
    state, out, _ = core.step(state, late, T0 + HOUR)
    assert state is not None and state.triggers[TYPE][0] == T0 + DELAY  # the add at T0


def test_other_property_values_are_no_sign_up():
    items = [profile(), event(PAGE_VIEW, T0, properties={"action": "login"}), event(PAGE_VIEW, T0)]
    _, out = drive(Core(), items, T0 + DAY)
    assert fired(out) == []


def test_settings_delay_property_and_disable():
    s = CoreSettings(welcome_delay=HOUR, welcome_signup_property="kind",
                     welcome_signup_value="register")
    items = [profile(), event(PAGE_VIEW, T0, properties={"kind": "register"})]
    _, out = drive(Core(s), items, T0 + HOUR)
    assert fired(out) == [(SIGNUP, T0 + HOUR, "emitted")]
    _, out = drive(Core(CoreSettings(welcome_enabled=False)), [profile(), sign_up(T0)], T0 + DAY)
    assert fired(out) == []


def test_the_mark_expires_with_the_profile_then_a_new_sign_up_welcomes_again():
    core = Core()
    state, out = drive(core, [profile(T0 - HOUR), sign_up(T0)], T0 + DAY)
    assert len(fired(out)) == 1
    state, _ = drive(core, [], T0 + 29 * DAY, state)
    assert state is not None and state.triggers[TYPE][1] == DEADLINE  # held with the profile
    state, _, _ = core.wake(state, T0 + 32 * DAY)
    assert state is not None and state.profile is None  # the mark goes at the next purge
    state, _, _ = core.wake(state, T0 + 32 * DAY + HOUR)
    assert state is None  # profile, consent and the mark all gone: the customer is forgotten
    state, out = drive(core, [profile(T0 + 40 * DAY), sign_up(T0 + 40 * DAY)], T0 + 41 * DAY)
    assert fired(out) == [(SIGNUP, T0 + 40 * DAY + DELAY, "emitted")]
