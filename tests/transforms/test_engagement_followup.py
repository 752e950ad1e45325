"""Email-engagement follow-up at named instants: deadline, 1 ms before, cancellation, expiry."""

from tests.builders import HOUR, MINUTE, T0, event, profile, purchase, view
from tests.transforms.drive import decisions, drive
from transforms.core import Core
from transforms.model import EMAIL_CLICK, EMAIL_OPEN, PAGE_VIEW
from transforms.settings import DAY, CoreSettings
from transforms.triggers.engagement_followup import TYPE

WINDOW = 2 * HOUR
DEADLINE = T0 + WINDOW


def click(t, message="m1", **kw):
    return event(EMAIL_CLICK, t, email_message_id=message, **kw)


def fired(outputs):
    return [(d[1], d[2], d[3]) for d in decisions(outputs) if d[0] == TYPE]


def test_fires_at_exactly_click_plus_window():
    c = click(T0)
    state, out = drive(Core(), [profile(), c], DEADLINE)
    assert fired(out) == [("m1", DEADLINE, "emitted")]
    assert state is not None and TYPE not in state.triggers


def test_not_one_ms_before():
    _, out = drive(Core(), [profile(), click(T0)], DEADLINE - 1)
    assert fired(out) == []


def test_a_visit_within_the_window_cancels():
    for visit in (view(T0 + MINUTE, "p1"), event(PAGE_VIEW, T0 + HOUR), purchase(T0 + HOUR)):
        _, out = drive(Core(), [profile(), click(T0), visit], T0 + DAY)
        assert fired(out) == []


def test_a_visit_at_exactly_the_deadline_cancels():
    _, out = drive(Core(), [profile(), click(T0), view(DEADLINE, "p1")], T0 + DAY)
    assert fired(out) == []


def test_a_visit_1_ms_after_the_deadline_is_too_late():
    _, out = drive(Core(), [profile(), click(T0), view(DEADLINE + 1, "p1")], T0 + DAY)
    assert fired(out) == [("m1", DEADLINE, "emitted")]


def test_an_open_neither_arms_nor_cancels():
    items = [profile(), event(EMAIL_OPEN, T0 - MINUTE, email_message_id="m1"), click(T0),
             event(EMAIL_OPEN, T0 + MINUTE, email_message_id="m1")]
    _, out = drive(Core(), items, T0 + DAY)
    assert fired(out) == [("m1", DEADLINE, "emitted")]
    _, out = drive(Core(), [profile(), event(EMAIL_OPEN, T0, email_message_id="m1")], T0 + DAY)
    assert fired(out) == []


def test_a_later_click_rearms_from_itself():
    _, out = drive(Core(), [profile(), click(T0), click(T0 + HOUR, "m2")], T0 + DAY)
    assert fired(out) == [("m2", T0 + HOUR + WINDOW, "emitted")]


def test_a_click_without_message_id_is_keyed_by_its_event_id():
    c = event(EMAIL_CLICK, T0)
    _, out = drive(Core(), [profile(), c], T0 + DAY)
    assert fired(out) == [(c.event_id, DEADLINE, "emitted")]


def test_window_is_a_setting_and_it_can_be_disabled():
    _, out = drive(Core(CoreSettings(followup_window=HOUR)), [profile(), click(T0)], T0 + HOUR)
    assert fired(out) == [("m1", T0 + HOUR, "emitted")]
    _, out = drive(Core(CoreSettings(followup_enabled=False)), [profile(), click(T0)], T0 + DAY)
    assert fired(out) == []


def test_the_slot_is_gone_after_cancellation_and_the_state_expires():
    core = Core()
    state, _ = drive(core, [profile(), click(T0), view(T0 + MINUTE)], T0 + 2 * MINUTE)
    assert state is not None and TYPE not in state.triggers
    state, _, _ = core.wake(state, T0 + 40 * DAY)
    assert state is None
