from tests.builders import CART_DELAY, HOUR, MINUTE, T0, add, profile, purchase, remove, view
from tests.transforms.drive import decisions, drive, payloads
from transforms.core import Core
from transforms.triggers.cart_abandonment import TYPE, cart_key

CART = "cart_abandonment"


def fired(outputs):
    return [(d[0], d[2]) for d in decisions(outputs) if d[0] == CART]


def test_fires_at_exactly_the_deadline_with_the_cart_as_evidence():
    core = Core()
    _, out = drive(core, [profile(), add(T0, "p2"), add(T0 + MINUTE, "p1")], T0 + 3 * HOUR)
    assert fired(out) == [(CART, T0 + MINUTE + CART_DELAY)]
    (payload,) = payloads(out)
    assert payload.trigger.evidence == ["p1", "p2"]
    assert payload.trigger.fired_at == T0 + MINUTE + CART_DELAY


def test_not_before_the_deadline():
    _, out = drive(Core(), [profile(), add(T0)], T0 + CART_DELAY - 1)
    assert fired(out) == []


def test_each_cart_change_rearms_the_deadline():
    _, out = drive(
        Core(),
        [profile(), add(T0), add(T0 + 30 * MINUTE, "p2"), remove(T0 + 50 * MINUTE, "p2")],
        T0 + 4 * HOUR,
    )
    assert fired(out) == [(CART, T0 + 50 * MINUTE + CART_DELAY)]


def test_purchase_before_the_deadline_cancels():
    _, out = drive(Core(), [profile(), add(T0), purchase(T0 + 10 * MINUTE)], T0 + 4 * HOUR)
    assert fired(out) == []


def test_cart_change_at_exactly_the_deadline_counts_as_in_between():
    _, out = drive(Core(), [profile(), add(T0), add(T0 + CART_DELAY, "p2")], T0 + 4 * HOUR)
    assert fired(out) == [(CART, T0 + 2 * CART_DELAY)]


def test_purchase_at_exactly_the_deadline_cancels():
    _, out = drive(Core(), [profile(), add(T0), purchase(T0 + CART_DELAY)], T0 + 4 * HOUR)
    assert fired(out) == []


def test_a_view_at_the_deadline_does_not_cancel():
    _, out = drive(Core(), [profile(), add(T0), view(T0 + CART_DELAY, "p9", "hats")], T0 + 4 * HOUR)
    assert fired(out) == [(CART, T0 + CART_DELAY)]


def test_emptied_cart_does_not_fire():
    _, out = drive(Core(), [profile(), add(T0), remove(T0 + MINUTE)], T0 + 4 * HOUR)
    assert fired(out) == []


def test_fires_once_per_cart_state_and_next_change_rearms():
    core = Core()
    state, out = drive(core, [profile(), add(T0)], T0 + 5 * HOUR)
    assert fired(out) == [(CART, T0 + CART_DELAY)]
    state, out2 = drive(core, [add(T0 + 6 * HOUR, "p2")], T0 + 30 * HOUR, state)
    # Re-armed by the change and fired again, but one cart payload per 24 h: capped.
    assert [(d[2], d[3]) for d in decisions(out2) if d[0] == CART] == [
        (T0 + 7 * HOUR, "suppressed:frequency_cap")
    ]


def test_key_is_a_stable_id_of_the_cart_content():
    a = {"p1": (1, None, "e1"), "p2": (2, None, "e2")}
    b = {"p2": (2, None, "x"), "p1": (1, None, "y")}
    assert cart_key(a) == cart_key(b)
    assert cart_key(a) != cart_key({"p1": (2, None, "e1"), "p2": (2, None, "e2")})
    _, out = drive(Core(), [profile(), add(T0, "p1")], T0 + 2 * HOUR)
    assert decisions(out)[0][1] == cart_key({"p1": (1, None, "")})
    assert TYPE == CART
