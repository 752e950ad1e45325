"""Attribution of opens, clicks and purchases to sends, and the holdout group (DESIGN.md
section 9; transforms/attribution.py)."""

import pickle

from tests.builders import CART_DELAY, HOUR, MINUTE, T0, add, erasure, event, profile, purchase
from tests.transforms.drive import decisions, drive, payloads
from transforms import attribution
from transforms.core import Core
from transforms.model import AUDIT, DROPPED, EMAIL_CLICK, EMAIL_OPEN, OUTCOME
from transforms.settings import CoreSettings
from transforms.state import CustomerState

WINDOW = 72 * HOUR
SEND = T0 + CART_DELAY                  # the cart abandonment email of add(T0)
WINDOW_END = SEND + WINDOW              # the last instant an outcome is attributed
NO_HOLDOUT = CoreSettings(holdout_share=0.0)


def _outcomes(out):
    return [o for kind, o in out if kind == OUTCOME]


def _send(settings=NO_HOLDOUT, cid="c1"):
    """A customer with one cart abandonment email sent at SEND: (core, state, message id)."""
    core = Core(settings)
    state, out = drive(core, [profile(cid=cid), add(T0, cid=cid)], SEND)
    sent = [a for kind, a in out if kind == AUDIT and a.message_id]
    assert [a.fired_at for a in sent] == [SEND]
    return core, state, sent[0].message_id


def _open(t, mid, kind=EMAIL_OPEN, cid="c1"):
    return event(kind, t, cid=cid, email_message_id=mid)


def test_open_at_the_window_end_is_attributed_one_ms_later_is_not():
    core, state, mid = _send()
    state, out = drive(core, [_open(WINDOW_END, mid)], WINDOW_END, state)
    [o] = _outcomes(out)
    assert (o.message_id, o.kind, o.value, o.occurred_at, o.fired_at) == (
        mid, "open", 0.0, WINDOW_END, SEND)
    assert (o.trigger_type, o.holdout, o.customer_id) == ("cart_abandonment", False, "c1")
    assert o.variant is None  # the arms stage fills it in (transforms/bandit.py)
    core, state, mid = _send()
    _, out = drive(core, [_open(WINDOW_END + 1, mid)], WINDOW_END + 1, state)
    assert _outcomes(out) == []


def test_open_before_the_send_and_foreign_ids_are_not_attributed():
    core, state, mid = _send()
    early = _open(SEND - 1, mid)   # names the message before it was sent (forged or clock skew)
    foreign = _open(SEND + MINUTE, "not-a-message-of-ours")
    other = _open(SEND + MINUTE, mid, cid="c2")  # another customer's event naming c1's message
    missing = _open(SEND + MINUTE, None)
    state, out = drive(core, [early, foreign, missing], SEND + HOUR, state)
    assert _outcomes(out) == []
    _, out2 = drive(core, [other], SEND + HOUR)
    assert _outcomes(out2) == []


def test_every_open_and_click_is_an_outcome():
    core, state, mid = _send()
    items = [_open(SEND + MINUTE, mid), _open(SEND + 2 * MINUTE, mid),
             _open(SEND + 3 * MINUTE, mid, EMAIL_CLICK)]
    _, out = drive(core, items, SEND + HOUR, state)
    assert [(o.kind, o.occurred_at) for o in _outcomes(out)] == [
        ("open", SEND + MINUTE), ("open", SEND + 2 * MINUTE), ("click", SEND + 3 * MINUTE)]


def test_purchase_is_last_touch_within_the_window():
    settings = CoreSettings(holdout_share=0.0, max_per_type_per_day=5, max_per_day=5)
    core = Core(settings)
    items = [profile(), add(T0, "p1"), add(T0 + 2 * HOUR, "p2")]
    state, out = drive(core, items, T0 + 3 * HOUR + 1)
    sent = [(a.fired_at, a.message_id) for kind, a in out if kind == AUDIT and a.message_id]
    assert [t for t, _ in sent] == [SEND, T0 + 2 * HOUR + CART_DELAY]
    second = sent[1]
    buy = purchase(T0 + 3 * HOUR + MINUTE, "p9", price=30.0)
    state, out = drive(core, [buy], T0 + 4 * HOUR, state)
    [o] = _outcomes(out)
    assert (o.message_id, o.kind, o.value, o.fired_at) == (second[1], "purchase", 30.0, second[0])
    # A purchase between the two sends goes to the first.
    core = Core(settings)
    state, _ = drive(core, items[:2], SEND)
    state, out = drive(core, [purchase(SEND + MINUTE, "p8", price=12.5)], SEND + HOUR, state)
    [o] = _outcomes(out)
    assert (o.fired_at, o.value) == (SEND, 12.5)


def test_purchase_window_edge():
    core, state, mid = _send()
    _, out = drive(core, [purchase(WINDOW_END, price=20.0)], WINDOW_END, state)
    assert [(o.message_id, o.value) for o in _outcomes(out)] == [(mid, 20.0)]
    core, state, mid = _send()
    _, out = drive(core, [purchase(WINDOW_END + 1, price=20.0)], WINDOW_END + 1, state)
    assert _outcomes(out) == []


def test_purchase_before_any_send_or_at_its_instant_is_not_attributed():
    core = Core(NO_HOLDOUT)
    # At SEND itself: events of an instant are processed before its fires.
    _, out = drive(core, [profile(), add(T0), purchase(SEND, "p7")], SEND + HOUR)
    assert _outcomes(out) == []


def test_messages_expire_with_the_window_and_the_state_empties():
    core, state, mid = _send()
    assert state.messages and state.messages[0][1] == mid
    state, out, _ = core.wake(state, WINDOW_END + 1)
    assert state is None or state.messages == []


def test_messages_are_capped_oldest_first():
    settings = CoreSettings(holdout_share=0.0, max_per_type_per_day=10, max_per_day=10,
                            max_attributed_messages=2)
    core = Core(settings)
    items = [profile(), *[add(T0 + i * 2 * HOUR, f"p{i}") for i in range(3)]]
    state, out = drive(core, items, T0 + 7 * HOUR)
    assert [r for kind, r in out if kind == DROPPED].count(attribution.EVICTED_MESSAGES) == 1
    assert [m[0] for m in state.messages] == [T0 + 2 * HOUR + CART_DELAY,
                                              T0 + 4 * HOUR + CART_DELAY]


def test_old_pickled_state_loads_without_messages():
    state = CustomerState("c1")
    values = state.__getstate__()[:-1]     # a state pickled before the messages slot
    fresh = CustomerState.__new__(CustomerState)
    fresh.__setstate__(values)
    assert fresh.messages == []
    fresh.__setstate__({"customer_id": "c1"})
    assert fresh.messages == []
    assert pickle.loads(pickle.dumps(fresh)).messages == []


# ------------------------------------------------------------------ holdout


def test_holdout_share_and_stability():
    ids = [f"cust-{i}" for i in range(10_000)]
    held = [c for c in ids if attribution.in_holdout(c, 0.05, "holdout-v1")]
    assert 300 <= len(held) <= 800
    assert held == [c for c in ids if attribution.in_holdout(c, 0.05, "holdout-v1")]
    other = {c for c in ids if attribution.in_holdout(c, 0.05, "another-salt")}
    assert other != set(held)
    assert not any(attribution.in_holdout(c, 0.0, "holdout-v1") for c in ids)
    assert all(attribution.in_holdout(c, 1.0, "holdout-v1") for c in ids)


def _held_customer(settings):
    return next(f"h{i}" for i in range(1000)
                if attribution.in_holdout(f"h{i}", settings.holdout_share, settings.holdout_salt))


def test_holdout_is_audited_no_payload_and_conversions_attributed():
    settings = CoreSettings(holdout_share=0.05)
    cid = _held_customer(settings)
    core = Core(settings)
    state, out = drive(core, [profile(cid=cid), add(T0, cid=cid)], SEND)
    assert payloads(out) == []
    [audit] = [a for kind, a in out if kind == AUDIT]
    assert (audit.fired_at, audit.decision) == (SEND, "suppressed:holdout")
    assert audit.message_id
    # An open of a message never sent is forged: not attributed; a purchase is.
    forged = _open(SEND + MINUTE, audit.message_id, cid=cid)
    buy = purchase(SEND + HOUR, cid=cid, price=40.0)
    state, out = drive(core, [forged, buy], SEND + 2 * HOUR, state)
    [o] = _outcomes(out)
    assert (o.message_id, o.holdout, o.variant, o.value) == (audit.message_id, True, None, 40.0)


def test_holdout_comes_after_consent_and_counts_for_the_caps():
    settings = CoreSettings(holdout_share=0.05)
    cid = _held_customer(settings)
    core = Core(settings)
    _, out = drive(core, [profile(cid=cid, consent=False), add(T0, cid=cid)], SEND)
    assert [d[3] for d in decisions(out)] == ["suppressed:no_consent"]
    # A second cart abandonment within the day is capped, as the first one counted as sent.
    items = [profile(cid=cid), add(T0, "p1", cid=cid), add(T0 + 2 * HOUR, "p2", cid=cid)]
    _, out = drive(core, items, T0 + 4 * HOUR)
    assert [d[3] for d in decisions(out)] == ["suppressed:holdout", "suppressed:frequency_cap"]


def test_holdout_zero_disables_it():
    settings = CoreSettings(holdout_share=0.0)
    cid = _held_customer(CoreSettings())
    _, out = drive(Core(settings), [profile(cid=cid), add(T0, cid=cid)], SEND)
    assert [d[3] for d in decisions(out)] == ["emitted"]


def test_an_erasure_forgets_the_sends():
    core, state, mid = _send()
    items = [erasure(SEND + MINUTE), _open(SEND + 2 * MINUTE, mid),
             purchase(SEND + 3 * MINUTE, price=9.0)]
    state, out = drive(core, items, SEND + HOUR, state)
    assert _outcomes(out) == [] and state.messages == []
