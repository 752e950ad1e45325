"""Priority among triggers is the setting core.trigger_priority (DESIGN.md sections 4, 10)."""

from tests.builders import T0, event, profile, purchase
from tests.transforms.drive import decisions, drive
from transforms import policy
from transforms.core import Core
from transforms.model import EMAIL_CLICK, FiredTrigger
from transforms.settings import DAY, HOUR, CoreSettings
from transforms.state import CustomerState
from transforms.triggers import load_triggers, priorities


def test_default_order_and_unknown_types_after_all_listed_by_name():
    s = CoreSettings()
    rank = priorities(s, ["zeta", "alpha", "welcome"])
    order = sorted(rank, key=rank.__getitem__)
    assert order == [
        "cart_abandonment", "browse_intensity", "back_in_stock", "price_drop", "post_purchase",
        "engagement_followup", "welcome", "win_back", "alpha", "zeta",
    ]
    assert [t.type for t in load_triggers(s)] == [
        "cart_abandonment", "browse_intensity", "back_in_stock", "price_drop", "post_purchase",
        "engagement_followup", "welcome", "win_back",
    ]


def test_policy_suppresses_all_but_the_first_by_the_setting():
    state = CustomerState("c1")
    state.profile = profile()
    state.set_consent(True, T0 - HOUR, True)
    fires = [FiredTrigger(t, "k", T0, []) for t in ("win_back", "post_purchase", "zz", "aa")]
    for setting, first in [(CoreSettings(), "post_purchase"),
                           (CoreSettings(trigger_priority="win_back,post_purchase"), "win_back")]:
        rank = priorities(setting, ["win_back", "post_purchase"])
        out = policy.decide(state, fires, T0, setting, rank)
        assert [(f.type, r) for f, r in out][0] == (first, None)
        assert [f.type for f, r in out][2:] == ["aa", "zz"]  # unranked: after, by name
        assert all(r == policy.PRIORITY for _, r in out[1:])


def test_two_new_triggers_at_one_instant_in_the_core():
    # A click at T0 and a purchase 3 d - 2 h before: follow-up and post-purchase both at T0 + 2 h.
    items = [profile(T0 - 4 * DAY), purchase(T0 + 2 * HOUR - 3 * DAY),
             event(EMAIL_CLICK, T0, email_message_id="m1")]
    _, out = drive(Core(), items, T0 + DAY)
    got = [(d[0], d[3]) for d in decisions(out) if d[2] == T0 + 2 * HOUR]
    assert got == [("post_purchase", "emitted"), ("engagement_followup", "suppressed:priority")]
    s = CoreSettings(trigger_priority="engagement_followup,post_purchase")
    _, out = drive(Core(s), items, T0 + DAY)
    got = [(d[0], d[3]) for d in decisions(out) if d[2] == T0 + 2 * HOUR]
    assert got == [("engagement_followup", "emitted"), ("post_purchase", "suppressed:priority")]
