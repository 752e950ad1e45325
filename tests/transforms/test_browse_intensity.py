from tests.builders import BROWSE_WINDOW, HOUR, MINUTE, T0, add, profile, view
from tests.transforms.drive import decisions, drive, payloads
from transforms.core import Core

BROWSE = "browse_intensity"


def burst(start, n=5, step=MINUTE, category="shoes"):
    return [view(start + i * step, f"p{i % 3}", category) for i in range(n)]


def test_fires_on_the_fifth_view_in_the_window_at_its_time():
    _, out = drive(Core(), [profile(), *burst(T0)], T0 + HOUR)
    assert decisions(out) == [(BROWSE, "shoes", T0 + 4 * MINUTE, "emitted")]
    (payload,) = payloads(out)
    assert payload.trigger.evidence == ["p0", "p1", "p2"]
    assert payload.trigger.key == "shoes"


def test_four_views_do_not_fire():
    _, out = drive(Core(), [profile(), *burst(T0, n=4)], T0 + HOUR)
    assert decisions(out) == []


def test_window_is_half_open_a_view_exactly_30_min_old_does_not_count():
    views = [view(T0 + i * MINUTE) for i in range(4)] + [view(T0 + BROWSE_WINDOW)]
    _, out = drive(Core(), [profile(), *views], T0 + HOUR)
    assert decisions(out) == []
    views[-1] = view(T0 + BROWSE_WINDOW - 1)
    _, out = drive(Core(), [profile(), *views], T0 + HOUR)
    assert decisions(out) == [(BROWSE, "shoes", T0 + BROWSE_WINDOW - 1, "emitted")]


def test_views_in_other_categories_do_not_count():
    items = [profile(), *burst(T0, n=3), *burst(T0, n=2, category="hats")]
    _, out = drive(Core(), items, T0 + HOUR)
    assert decisions(out) == []


def test_add_to_cart_in_the_category_within_the_window_blocks():
    _, out = drive(Core(), [profile(), add(T0 - 10 * MINUTE, "p7"), *burst(T0)], T0 + 30 * MINUTE)
    assert [d for d in decisions(out) if d[0] == BROWSE] == []


def test_add_to_cart_older_than_the_window_does_not_block():
    _, out = drive(
        Core(),
        [profile(), add(T0 - BROWSE_WINDOW + 4 * MINUTE, "p7"), *burst(T0)],
        T0 + 30 * MINUTE,
    )
    assert [d for d in decisions(out) if d[0] == BROWSE] == [
        (BROWSE, "shoes", T0 + 4 * MINUTE, "emitted")
    ]


def test_add_to_cart_in_another_category_does_not_block():
    _, out = drive(
        Core(), [profile(), add(T0 - MINUTE, "h1", "hats"), *burst(T0)], T0 + 30 * MINUTE
    )
    assert (BROWSE, "shoes", T0 + 4 * MINUTE, "emitted") in decisions(out)


def test_cooldown_one_fire_per_category_per_24h():
    items = [profile(), *burst(T0), *burst(T0 + 2 * HOUR), *burst(T0 + 24 * HOUR + 4 * MINUTE)]
    _, out = drive(Core(), items, T0 + 30 * HOUR)
    assert [d[2] for d in decisions(out)] == [T0 + 4 * MINUTE, T0 + 24 * HOUR + 8 * MINUTE]


def test_cooldown_starts_even_when_the_policy_suppresses():
    items = [
        profile(consent=False),
        *burst(T0),
        profile(T0 + HOUR, consent=True),
        *burst(T0 + 2 * HOUR),
    ]
    _, out = drive(Core(), items, T0 + 5 * HOUR)
    assert decisions(out) == [(BROWSE, "shoes", T0 + 4 * MINUTE, "suppressed:no_consent")]
