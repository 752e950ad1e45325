from datetime import UTC, datetime

from tests.builders import CART_DELAY, HOUR, MINUTE, T0, add, consent, profile, purchase, view
from tests.transforms.drive import decisions, drive, payloads
from transforms import policy
from transforms.core import Core
from transforms.settings import DAY, CoreSettings

NO_WELCOME = CoreSettings(welcome_enabled=False)


def burst(start, category="shoes", n=5):
    return [view(start + i * MINUTE, f"{category}-{i}", category) for i in range(n)]


def ms(*args, tz=UTC):
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)


def test_no_profile_means_no_consent():
    _, out = drive(Core(), burst(T0), T0 + HOUR)
    assert [d[3] for d in decisions(out)] == ["suppressed:no_consent"]


def test_unsubscribe_suppresses_everything_after_it():
    items = [profile(), add(T0), consent(T0 + 10 * MINUTE, False)]
    _, out = drive(Core(), items, T0 + 3 * HOUR)
    assert [d[3] for d in decisions(out)] == ["suppressed:no_consent"]


def test_consent_as_of_the_fire_time_newest_statement_wins():
    items = [profile(consent=False), consent(T0 - MINUTE, True), *burst(T0)]
    _, out = drive(Core(NO_WELCOME), items, T0 + HOUR)  # the grant would welcome too
    assert [d[3] for d in decisions(out)] == ["emitted"]
    items = [profile(consent=True), consent(T0 + 30 * MINUTE, False), *burst(T0)]
    _, out = drive(Core(), items, T0 + HOUR)
    assert [d[3] for d in decisions(out)] == ["emitted"]  # the fire came before the unsubscribe


def test_no_email_address_is_suppressed():
    _, out = drive(Core(), [profile(email=None), *burst(T0)], T0 + HOUR)
    assert [d[3] for d in decisions(out)] == ["suppressed:no_address"]


def test_priority_cart_before_browse_at_the_same_instant():
    # Cart armed at T0 fires at T0 + 1h; the 5th shoe view lands on exactly that instant.
    items = [profile(), add(T0, "h1", "hats"), *burst(T0 + CART_DELAY - 4 * MINUTE)]
    _, out = drive(Core(), items, T0 + 3 * HOUR)
    assert sorted(decisions(out)) == sorted(
        [
            ("cart_abandonment", decisions(out)[0][1], T0 + CART_DELAY, "emitted"),
            ("browse_intensity", "shoes", T0 + CART_DELAY, "suppressed:priority"),
        ]
    )


def test_priority_between_two_browse_fires_goes_by_key():
    items = [profile(), *burst(T0, "shoes"), *burst(T0, "hats")]
    _, out = drive(Core(), items, T0 + HOUR)
    assert decisions(out) == [
        ("browse_intensity", "hats", T0 + 4 * MINUTE, "emitted"),
        ("browse_intensity", "shoes", T0 + 4 * MINUTE, "suppressed:priority"),
    ]


def test_frequency_cap_two_per_rolling_day_and_one_per_type():
    items = [
        profile(),
        *burst(T0, "shoes"),
        *burst(T0 + HOUR, "hats"),  # 2nd browse: type cap
        add(T0 + 2 * HOUR, "b1", "bags"),  # cart: 2nd payload, ok
        *burst(T0 + 5 * HOUR, "coats"),
    ]
    _, out = drive(Core(), items, T0 + 10 * HOUR)
    assert [(d[0], d[3]) for d in decisions(out)] == [
        ("browse_intensity", "emitted"),
        ("browse_intensity", "suppressed:frequency_cap"),
        ("cart_abandonment", "emitted"),
        ("browse_intensity", "suppressed:frequency_cap"),
    ]


def test_cap_window_is_half_open():
    s = CoreSettings()
    sent = [(T0, "browse_intensity")]
    assert policy.capped(sent, "browse_intensity", T0 + DAY - 1, s)
    assert not policy.capped(sent, "browse_intensity", T0 + DAY, s)


def test_suppressed_triggers_do_not_count_against_caps():
    items = [
        profile(consent=False),
        *burst(T0, "shoes"),
        profile(T0 + HOUR, consent=True),
        *burst(T0 + 2 * HOUR, "hats"),
    ]
    _, out = drive(Core(NO_WELCOME), items, T0 + 5 * HOUR)  # the grant would welcome too
    assert [d[3] for d in decisions(out)] == ["suppressed:no_consent", "emitted"]


def test_quiet_hours_defer_to_next_8am_local():
    s = CoreSettings()
    paris = policy.zone("Europe/Paris")
    fired = ms(2026, 1, 5, 23, 30, tz=paris)
    assert policy.send_after(fired, "Europe/Paris", s) == ms(2026, 1, 6, 8, 0, tz=paris)
    early = ms(2026, 1, 6, 6, 0, tz=paris)
    assert policy.send_after(early, "Europe/Paris", s) == ms(2026, 1, 6, 8, 0, tz=paris)
    assert policy.send_after(ms(2026, 1, 6, 8, 0, tz=paris), "Europe/Paris", s) is None
    assert policy.send_after(ms(2026, 1, 6, 21, 59, tz=paris), "Europe/Paris", s) is None
    assert policy.expires_at(fired, ms(2026, 1, 6, 8, 0, tz=paris), s) == ms(
        2026, 1, 7, 8, 0, tz=paris
    )


def test_quiet_hours_on_the_payload_in_the_customers_zone():
    # T0 is 12:00 UTC = 21:00 in Tokyo... +1h -> 22:00 Tokyo: quiet.
    tokyo = policy.zone("Asia/Tokyo")
    items = [profile(tz="Asia/Tokyo"), *burst(T0 + HOUR - 4 * MINUTE)]
    _, out = drive(Core(), items, T0 + 2 * HOUR)
    (p,) = payloads(out)
    assert p.send_after == ms(2026, 1, 6, 8, 0, tz=tokyo)
    assert p.expires_at == p.send_after + DAY
    items = [profile(tz="Europe/London"), *burst(T0)]
    (p,) = payloads(drive(Core(), items, T0 + HOUR)[1])
    assert p.send_after is None and p.expires_at == T0 + 4 * MINUTE + DAY


def test_recommendations_never_include_what_was_just_bought():
    seen_before = [view(T0 - 3 * HOUR, "bag-9", "bags"), view(T0 - 3 * HOUR, "bag-8", "bags")]
    items = [profile(), *seen_before, purchase(T0 - HOUR, "bag-9", "bags"), *burst(T0)]
    (p,) = payloads(drive(Core(), items, T0 + HOUR)[1])
    recommended = {r.product_id for r in p.recommendations}
    assert "bag-8" in recommended  # no model: the customer's own recent views
    assert "bag-9" not in recommended
