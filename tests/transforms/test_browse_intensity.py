from tests.builders import BROWSE_WINDOW, HOUR, MINUTE, T0, add, profile, view
from tests.transforms.drive import decisions, drive, payloads
from transforms.core import Core
from transforms.settings import CoreSettings

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
    _, out = drive(Core(CoreSettings(welcome_enabled=False)), items, T0 + 5 * HOUR)
    assert decisions(out) == [(BROWSE, "shoes", T0 + 4 * MINUTE, "suppressed:no_consent")]


def test_views_per_category_are_capped_and_the_fire_still_comes_at_the_threshold():
    from transforms.settings import CoreSettings

    core = Core(CoreSettings(max_category_views=5))
    # An add_to_cart blocks the category for the window; views pile up meanwhile.
    items = [profile(), add(T0, "p0"), *burst(T0 + MINUTE, n=40, step=10_000)]
    state, out = drive(core, items, T0 + 10 * MINUTE)
    assert decisions(out) == []
    assert len(state.triggers[BROWSE].views["shoes"]) <= 5
    assert ("dropped", "evicted:browse_views") in out
    # Once the add has left the window, the next view fires, with the newest views as evidence.
    state, out = drive(core, [view(T0 + BROWSE_WINDOW + MINUTE, "p9")], T0 + HOUR - 1, state)
    assert decisions(out) == [(BROWSE, "shoes", T0 + BROWSE_WINDOW + MINUTE, "emitted")]
    (payload,) = payloads(out)
    assert len(payload.trigger.source_event_ids) <= 6


def test_categories_adds_and_cooldowns_are_capped_least_recent_first():
    from transforms.settings import CoreSettings

    core = Core(CoreSettings(max_categories=3))
    items = [profile()]
    for c in range(6):  # six categories, each fired (cooldown) and added to cart
        items += burst(T0 + c * MINUTE, n=5, step=1_000, category=f"c{c}")
        items.append(add(T0 + c * MINUTE + 10_000, f"a{c}", f"c{c}"))
    state, out = drive(core, items, T0 + HOUR)
    slot = state.triggers[BROWSE]
    assert len(slot.views) <= 3 and len(slot.last_add) <= 3 and len(slot.fired) <= 3
    assert "c5" in slot.fired and "c0" not in slot.fired
    assert ("dropped", "evicted:browse_categories") in out
