from tests.builders import HOUR, MINUTE, T0
from transforms.settings import DAY
from transforms.windows import Windows


def test_views_per_category_over_1h_and_24h_at_5_minute_buckets():
    w = Windows()
    w.add_view(T0 - 2 * HOUR, "shoes")
    w.add_view(T0 - 30 * MINUTE, "shoes")
    w.add_view(T0, "shoes")
    w.add_view(T0, "hats")
    f = w.features(T0)
    assert f.views_1h == {"shoes": 2, "hats": 1}
    assert f.views_24h == {"shoes": 3, "hats": 1}


def test_window_edge_is_exact_at_bucket_granularity():
    w = Windows()
    w.add_view(T0, "shoes")  # T0 is on a 5-minute boundary
    assert w.features(T0 + HOUR - 1).views_1h == {"shoes": 1}
    assert w.features(T0 + HOUR).views_1h == {}
    assert w.features(T0 + DAY).views_24h == {}


def test_purchases_revenue_emails_sessions_and_last_activity():
    w = Windows()
    w.add_purchase(T0 - 29 * DAY, 10.0)
    w.add_purchase(T0 - 31 * DAY, 99.0)
    w.add_purchase(T0, 5.5)
    w.add_email(T0, clicked=False)
    w.add_email(T0, clicked=True)
    w.add_cart(T0 - 23 * HOUR)
    w.touch(T0 - 8 * DAY, "old")
    w.touch(T0 - HOUR, "s1")
    w.touch(T0, "s2")
    f = w.features(T0)
    assert (f.purchases_30d, f.revenue_30d) == (2, 15.5)
    assert (f.email_opens_30d, f.email_clicks_30d, f.cart_adds_24h) == (1, 1, 1)
    assert f.sessions_7d == 2 and f.last_activity_at == T0


def test_purge_empties_after_the_longest_window():
    w = Windows()
    w.add_view(T0, "shoes")
    w.add_purchase(T0, 1.0)
    w.add_email(T0, True)
    w.touch(T0, "s")
    w.purge(T0 + DAY)
    assert not w.views and not w.is_empty()
    assert w.expires_at() <= T0 + 30 * DAY + HOUR
    w.purge(T0 + 31 * DAY)
    assert w.is_empty() and w.expires_at() is None


def test_bound_evicts_the_least_recently_seen_sessions_and_categories():
    w = Windows()
    for i in range(5):
        w.touch(T0 + i * MINUTE, f"s{i}")
    w.touch(T0 + 10 * MINUTE, "s0")  # seen again: now the most recent
    w.add_view(T0, "old")
    w.add_view(T0 + HOUR, "shoes")
    w.add_view(T0 + 2 * HOUR, "hats")
    w.add_view(T0 + 3 * HOUR, "old")  # viewed again: now the most recent
    assert w.bound(max_sessions=4, max_categories=2) == ["evicted:sessions", "evicted:categories"]
    assert list(w.sessions) == ["s2", "s3", "s4", "s0"]
    assert set(w.views) == {"hats", "old"}
    assert w.bound(max_sessions=4, max_categories=2) == []
