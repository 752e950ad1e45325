"""Windowed behaviour features per customer over event time (DESIGN.md section 4).

Counts are kept in sparse time buckets, so a window is exact at its bucket granularity: the
window of length W at time t covers the W / B buckets ending with the bucket holding t, i.e.
events with `bucket(ts) > bucket(t) - W / B` where bucket(ts) = ts // B.

    views per category   1 h, 24 h   5-minute buckets  (12 and 288 buckets)
    cart adds            24 h        5-minute buckets
    purchases, revenue   30 d        1-hour buckets
    email opens, clicks  30 d        1-hour buckets
    sessions             7 d         exact: distinct session ids by last-seen time
    last activity        -           exact

Buckets older than the longest window they serve are purged on every update, so the state
of an active customer is bounded in time, and an idle one's empties after 30 days. Sessions
and view categories are also capped in number (`bound`): beyond the caps the least recently
seen go, and the windows undercount them (a hostile or hot customer only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transforms.bounds import EVICTED_CATEGORIES, EVICTED_SESSIONS, evict
from transforms.settings import DAY, HOUR, MINUTE

SHORT_BUCKET = 5 * MINUTE
LONG_BUCKET = HOUR
VIEWS_SHORT = HOUR
VIEWS_LONG = DAY
CART_WINDOW = DAY
PURCHASE_WINDOW = 30 * DAY
EMAIL_WINDOW = 30 * DAY
SESSION_WINDOW = 7 * DAY


@dataclass(slots=True)
class Features:
    """A customer's windowed behaviour as of `as_of` (epoch ms); input of scoring."""

    as_of: int
    views_1h: dict[str, int] = field(default_factory=dict)  # category -> product views
    views_24h: dict[str, int] = field(default_factory=dict)  # category -> product views
    cart_adds_24h: int = 0
    purchases_30d: int = 0
    revenue_30d: float = 0.0
    sessions_7d: int = 0
    email_opens_30d: int = 0
    email_clicks_30d: int = 0
    last_activity_at: int | None = None


class Windows:
    """The bucketed counters behind `Features`; mutated in place, in event-time order."""

    __slots__ = ("views", "cart_adds", "purchases", "emails", "sessions", "last_activity")

    def __init__(self) -> None:
        self.views: dict[str, dict[int, int]] = {}  # category -> 5-min bucket -> views
        self.cart_adds: dict[int, int] = {}  # 5-min bucket -> adds
        self.purchases: dict[int, list[float]] = {}  # hour bucket -> [count, revenue]
        self.emails: dict[int, list[int]] = {}  # hour bucket -> [opens, clicks]
        self.sessions: dict[str, int] = {}  # session id -> last seen
        self.last_activity: int | None = None

    def __getstate__(self) -> tuple[object, ...]:
        return (
            self.views, self.cart_adds, self.purchases, self.emails, self.sessions,
            self.last_activity,
        )

    def __setstate__(self, values: tuple[Any, ...]) -> None:
        if len(values) == 2 and isinstance(values[1], dict):  # pickled before (savepoints)
            values = tuple(values[1].get(name) for name in self.__slots__)
        (
            self.views, self.cart_adds, self.purchases, self.emails, self.sessions,
            self.last_activity,
        ) = values

    def touch(self, ts: int, session_id: str | None) -> None:
        """Any behaviour at ts: last activity and the session it belongs to."""
        self.last_activity = ts
        if session_id:
            sessions = self.sessions
            sessions.pop(session_id, None)  # keep insertion order = last-seen order
            sessions[session_id] = ts

    def add_view(self, ts: int, category: str) -> None:
        """A product view in `category` at ts."""
        buckets = self.views.get(category)
        if buckets is None:
            buckets = self.views[category] = {}
        b = ts // SHORT_BUCKET
        buckets[b] = buckets.get(b, 0) + 1

    def add_cart(self, ts: int) -> None:
        """An add_to_cart at ts."""
        b = ts // SHORT_BUCKET
        self.cart_adds[b] = self.cart_adds.get(b, 0) + 1

    def add_purchase(self, ts: int, revenue: float) -> None:
        """A purchase of `revenue` at ts."""
        b = ts // LONG_BUCKET
        cell = self.purchases.get(b)
        if cell is None:
            self.purchases[b] = [1.0, revenue]
        else:
            cell[0] += 1
            cell[1] += revenue

    def add_email(self, ts: int, clicked: bool) -> None:
        """An email open (or click, when `clicked`) at ts."""
        b = ts // LONG_BUCKET
        cell = self.emails.get(b)
        if cell is None:
            cell = self.emails[b] = [0, 0]
        cell[1 if clicked else 0] += 1

    def bound(self, max_sessions: int, max_categories: int) -> list[str]:
        """Evict the least recently seen sessions and view categories beyond the caps; one
        reason per evicted entry."""
        evicted: list[str] = []
        if len(self.sessions) > max_sessions:  # in last-seen order (see touch)
            evicted += [EVICTED_SESSIONS] * evict(self.sessions, max_sessions)
        views = self.views
        if len(views) > max_categories:
            # A category's buckets are added in event-time order: its last is its newest.
            newest = lambda c: next(reversed(views[c]))  # noqa: E731
            evicted += [EVICTED_CATEGORIES] * evict(views, max_categories, newest)
        return evicted

    def purge(self, now: int) -> None:
        """Drop every bucket no window can still see at `now`."""
        short_floor = now // SHORT_BUCKET - VIEWS_LONG // SHORT_BUCKET
        for category in [c for c, bs in self.views.items() if _purge(bs, short_floor)]:
            del self.views[category]
        _purge(self.cart_adds, now // SHORT_BUCKET - CART_WINDOW // SHORT_BUCKET)
        long_floor = now // LONG_BUCKET - PURCHASE_WINDOW // LONG_BUCKET
        _purge(self.purchases, long_floor)
        _purge(self.emails, now // LONG_BUCKET - EMAIL_WINDOW // LONG_BUCKET)
        sessions = self.sessions
        while sessions:
            sid, seen = next(iter(sessions.items()))
            if seen > now - SESSION_WINDOW:
                break
            del sessions[sid]
        if self.last_activity is not None and self.last_activity <= now - PURCHASE_WINDOW:
            self.last_activity = None

    def is_empty(self) -> bool:
        """True when nothing is left in any window."""
        return not (
            self.views
            or self.cart_adds
            or self.purchases
            or self.emails
            or self.sessions
            or self.last_activity is not None
        )

    def expires_at(self) -> int | None:
        """When everything held now will have left every window (None if empty)."""
        if self.is_empty():
            return None
        ends = [0]
        if self.last_activity is not None:
            ends.append(self.last_activity + PURCHASE_WINDOW)
        for buckets in self.views.values():
            ends.append((max(buckets) + 1) * SHORT_BUCKET + VIEWS_LONG)
        if self.cart_adds:
            ends.append((max(self.cart_adds) + 1) * SHORT_BUCKET + CART_WINDOW)
        if self.purchases:
            ends.append((max(self.purchases) + 1) * LONG_BUCKET + PURCHASE_WINDOW)
        if self.emails:
            ends.append((max(self.emails) + 1) * LONG_BUCKET + EMAIL_WINDOW)
        if self.sessions:
            ends.append(max(self.sessions.values()) + SESSION_WINDOW)
        return max(ends)

    def features(self, now: int) -> Features:
        """The features as of `now` (exact at bucket granularity, see module docstring)."""
        bs = now // SHORT_BUCKET
        short_lo = bs - VIEWS_SHORT // SHORT_BUCKET
        long_lo = bs - VIEWS_LONG // SHORT_BUCKET
        views_1h: dict[str, int] = {}
        views_24h: dict[str, int] = {}
        for category, buckets in self.views.items():
            short = long = 0
            for b, n in buckets.items():
                if long_lo < b <= bs:
                    long += n
                    if b > short_lo:
                        short += n
            if short:
                views_1h[category] = short
            if long:
                views_24h[category] = long
        cart = 0
        for b, n in self.cart_adds.items():
            if long_lo < b <= bs:
                cart += n
        purchases = revenue = 0.0
        opens = clicks = 0
        if self.purchases or self.emails:
            bl = now // LONG_BUCKET
            lo30 = bl - PURCHASE_WINDOW // LONG_BUCKET
            for b, (count, rev) in self.purchases.items():
                if lo30 < b <= bl:
                    purchases += count
                    revenue += rev
            for b, (o, c) in self.emails.items():
                if lo30 < b <= bl:
                    opens += o
                    clicks += c
            revenue = round(revenue, 2)  # round() with digits costs a snapshot about 0.3 us
        sessions = 0
        lo7 = now - SESSION_WINDOW
        for seen in self.sessions.values():
            if lo7 < seen <= now:
                sessions += 1
        return Features(
            now,
            views_1h,
            views_24h,
            cart,
            int(purchases),
            revenue,
            sessions,
            opens,
            clicks,
            # As purge(now - 1) leaves it, whenever purges ran.
            last if (last := self.last_activity) is None or last >= now - PURCHASE_WINDOW
            else None,
        )

def _purge(
    buckets: dict[int, int] | dict[int, list[float]] | dict[int, list[int]], floor: int
) -> bool:
    """Delete buckets <= floor; True when the dict is left empty."""
    if buckets and min(buckets) <= floor:
        for b in [b for b in buckets if b <= floor]:
            del buckets[b]
    return not buckets
