"""How fast the keyed work can go in CPython at all: the bound row of the core bench.

    modelled(settings) -> settings                       the triggers it models only
    bound_run(records, settings, clock_ms) -> outputs   (kind, comparable tuple)
    comparable(core output), comparable_bound(bound output) -> what the check compares

The rules the shipped rees46 data exercises, written as one loop with no abstraction: no
`step`/`wake` contract, no trigger registry, no model records on the way out, state as a flat
list, every helper inlined but the windows' feature read. The same reference-runner clock
(watermark = max seen - max_out_of_orderness - 1, timers in rounds of FIRE_EVERY items, the
end-of-input flush), dedup, event-time buffering, windows, browse intensity, cart abandonment,
60-s write-behind feature snapshots with the engagement score, the policy (consent, address,
priority, caps, holdout), and a payload request (message_id, recommendation seeds, exclusions,
quiet hours) per emitted trigger. It leaves out what this data never or hardly reaches (purges
before the end of input, erasure, email and consent events, lateness bookkeeping beyond the
floor check) and the learning loop's attribution and arms stage: so it does no more work than
the core, only less, and its rate is an upper bound of what any pure-Python shape of these
rules does here. A test checks that it gives the core's
snapshots (customer, time, score), payload ids and audit decisions on the shipped data.

Other event types raise ValueError: the bound models only what it is measured on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from pipelines.reference import FIRE_EVERY
from transforms import policy
from transforms.attribution import in_holdout
from transforms.core import END_OF_TIME, PURCHASED_TTL, RECENT_VIEW_TTL
from transforms.model import (
    ADD_TO_CART,
    AUDIT,
    EMAIL_CHANNEL,
    FEATURES,
    PAYLOAD,
    PRODUCT_VIEW,
    PURCHASE,
    BehaviourEvent,
    CustomerProfile,
    Output,
)
from transforms.scoring import engagement_score
from transforms.settings import CoreSettings, Settings
from transforms.triggers.browse_intensity import TYPE as BROWSE_TYPE
from transforms.triggers.browse_intensity import view_time
from transforms.triggers.cart_abandonment import TYPE as CART_TYPE
from transforms.triggers.cart_abandonment import cart_key
from transforms.windows import LONG_BUCKET, SHORT_BUCKET, Windows

_NEVER = 1 << 64
Bound = tuple[str, tuple[Any, ...]]
# The state, a flat list: slot numbers.
(CID, PENDING, SEEN, WINDOWS, RECENT, CART, CART_DUE, BVIEWS, BADD, BFIRED, PROFILE, CONSENT,
 FEATURES_DUE, SENT, LAST_TRIGGER, DONE, BOUGHT) = range(17)


class _Bound:
    """The reference runner and the core's rules for this data, fused (see the module doc)."""

    def __init__(self, s: CoreSettings, clock_ms: int, out: list[Bound]) -> None:
        self.s, self.clock, self.out = s, clock_ms, out
        self.states: dict[str, list[Any]] = {}
        self.timers: list[tuple[int, str]] = []
        self.next_wake: dict[str, int] = {}

    def run(self, records: Sequence[BehaviourEvent | CustomerProfile]) -> None:
        s, out, states = self.s, self.out, self.states
        timers, next_wake = self.timers, self.next_wake
        ooo, future, dedup = s.max_out_of_orderness, s.max_future, s.dedup_ttl
        max_seen: int | None = None
        unfired = 0
        for item in records:
            is_event = type(item) is BehaviourEvent
            t = item.occurred_at if is_event else item.updated_at  # type: ignore[union-attr]
            watermark = None if max_seen is None else max_seen - ooo - 1
            horizon = self.clock if watermark is None else max(watermark, self.clock)
            if t > horizon + future:
                out.append(("dead_letter", (item.customer_id, t)))
                continue
            cid = item.customer_id
            st = states.get(cid)
            if st is None:
                st = states[cid] = [cid, [], {}, Windows(), {}, {}, None, {}, {}, {}, None, None,
                                    None, [], None, None, {}]
            floor = -_NEVER if watermark is None else watermark
            if st[DONE] is not None and st[DONE] > floor:
                floor = st[DONE]
            if is_event:
                seen = st[SEEN]
                seen_at = seen.get(item.event_id)  # type: ignore[union-attr]
                if seen_at is not None and abs(t - seen_at) < dedup:
                    continue  # dropped: duplicate
                if t <= floor:
                    out.append(("dead_letter", (cid, t)))
                    continue
                seen[item.event_id] = t  # type: ignore[union-attr]
                st[PENDING].append((t, 1, item.event_id, item))  # type: ignore[union-attr]
            else:
                st[PENDING].append((t, 0, "", item))
            held = next_wake.get(cid)
            if held is None or t < held:
                next_wake[cid] = t
                heapq.heappush(timers, (t, cid))
            if max_seen is None or t > max_seen:
                max_seen = t
            unfired += 1
            if unfired >= FIRE_EVERY:
                unfired = 0
                self.advance(max_seen - ooo - 1)
        self.advance(END_OF_TIME)

    def advance(self, watermark: int) -> None:
        timers, next_wake, states = self.timers, self.next_wake, self.states
        while timers and timers[0][0] <= watermark:
            t, cid = heapq.heappop(timers)
            if next_wake.get(cid) == t:
                del next_wake[cid]
                wake_at = self.wake(states[cid], watermark)
                if wake_at is None:
                    del states[cid]
                else:
                    next_wake[cid] = wake_at
                    heapq.heappush(timers, (wake_at, cid))

    def wake(self, st: list[Any], t: int) -> int | None:
        pending = st[PENDING]
        if len(pending) > 1:
            pending.sort(key=lambda p: (p[0], p[1], p[2]))
        cut = 0
        while cut < len(pending) and pending[cut][0] <= t:
            cut += 1
        due, st[PENDING] = pending[:cut], pending[cut:]
        i, n = 0, len(due)
        while True:
            ts = due[i][0] if i < n else _NEVER
            d = st[CART_DUE]
            if d is not None and d < ts:
                ts = d
            w = st[FEATURES_DUE]
            if w is not None and w < ts:
                ts = w
            if ts > t:
                break
            fires: list[tuple[str, str, list[str], str | None]] = []
            while i < n and due[i][0] == ts:
                rank, item = due[i][1], due[i][3]
                i += 1
                if rank == 0:
                    profile = st[PROFILE]
                    if profile is None or item.updated_at >= profile.updated_at:
                        st[PROFILE] = item
                        granted = item.consents.get(EMAIL_CHANNEL)
                        if granted is not None and (
                            st[CONSENT] is None or item.updated_at >= st[CONSENT][1]
                        ):
                            st[CONSENT] = (granted, item.updated_at)
                    continue
                self.apply(st, item, ts, fires)
            if st[CART_DUE] == ts:
                st[CART_DUE] = None
                if st[CART]:
                    fires.append((CART_TYPE, cart_key(st[CART]), sorted(st[CART]), None))
            if fires:
                self.decide(st, fires, ts)
            if st[FEATURES_DUE] == ts:
                st[FEATURES_DUE] = None
                self.emit_snapshot(st, ts, self.features(st, ts))
        if st[DONE] is None or t > st[DONE]:
            st[DONE] = t
        if t >= END_OF_TIME and not st[PENDING]:
            return None
        wake_at = (t + 3_600_000) // 3_600_000 * 3_600_000 + 3_600_000  # the purge wake
        if st[FEATURES_DUE] is not None and st[FEATURES_DUE] < wake_at:
            wake_at = st[FEATURES_DUE]
        if st[PENDING]:
            wake_at = min(wake_at, min(p[0] for p in st[PENDING]))
        if st[CART_DUE] is not None and st[CART_DUE] < wake_at:
            wake_at = st[CART_DUE]
        return wake_at

    def apply(self, st: list[Any], ev: BehaviourEvent, ts: int,
              fires: list[tuple[str, str, list[str], str | None]]) -> None:
        s = self.s
        etype = ev.event_type
        windows = st[WINDOWS]  # its counters updated in place here; features() read below
        windows.last_activity = ts
        sid = ev.session_id
        if sid:
            sessions = windows.sessions
            sessions.pop(sid, None)
            sessions[sid] = ts
        product = ev.product
        if etype == PRODUCT_VIEW and product is not None:
            pid, category = product.product_id, product.category
            recent = st[RECENT]
            recent.pop(pid, None)
            recent[pid] = (ts, category, product.brand, product.price)
            if len(recent) > s.recent_items:
                del recent[next(iter(recent))]
            if category:
                buckets = windows.views.get(category)
                if buckets is None:
                    buckets = windows.views[category] = {}
                b = ts // SHORT_BUCKET
                buckets[b] = buckets.get(b, 0) + 1
                views = st[BVIEWS].get(category)
                if views is None:
                    views = st[BVIEWS][category] = []
                views.append((ts, pid, ev.event_id))
                horizon = ts - s.browse_window
                if views[0][0] <= horizon:
                    del views[:bisect_right(views, horizon, key=view_time)]
                if len(views) >= s.browse_views:
                    added, fired = st[BADD].get(category), st[BFIRED].get(category)
                    if (added is None or added <= horizon) and (
                        fired is None or fired <= ts - s.browse_cooldown
                    ):
                        st[BFIRED][category] = ts
                        evidence = sorted({v[1] for v in views})
                        fires.append((BROWSE_TYPE, category, evidence, category))
        elif etype == ADD_TO_CART:
            b = ts // SHORT_BUCKET
            windows.cart_adds[b] = windows.cart_adds.get(b, 0) + 1
            if product is not None:
                held = st[CART].get(product.product_id)
                qty = (held[0] if held else 0) + (ev.quantity or 1)
                st[CART][product.product_id] = (qty, product, ev.event_id)
                if product.category:
                    st[BADD][product.category] = ts
            st[CART_DUE] = ts + s.cart_delay
        elif etype == PURCHASE:
            revenue = ev.order_total
            if product is not None and product.price is not None:
                revenue = product.price * (ev.quantity or 1)
            b = ts // LONG_BUCKET
            cell = windows.purchases.get(b)
            if cell is None:
                windows.purchases[b] = [1.0, revenue or 0.0]
            else:
                cell[0] += 1
                cell[1] += revenue or 0.0
            if product is not None:
                st[BOUGHT][product.product_id] = ts
            st[CART].clear()
            st[CART_DUE] = None
        elif etype != PRODUCT_VIEW:
            raise ValueError(f"the bound models views, cart adds and purchases, not {etype}")
        if st[FEATURES_DUE] is None:
            st[FEATURES_DUE] = ts + s.feature_write_interval

    def decide(self, st: list[Any], fires: list[tuple[str, str, list[str], str | None]],
               t: int) -> None:
        s, out, cid = self.s, self.out, st[CID]
        scored = self.features(st, t)
        fires.sort(key=lambda f: (0 if f[0] == CART_TYPE else 1, f[1]))
        consent, profile = st[CONSENT], st[PROFILE]
        for k, (kind, key, evidence, category) in enumerate(fires):
            st[LAST_TRIGGER] = kind
            reason: str | None
            if consent is None or not consent[0]:
                reason = policy.NO_CONSENT
            elif profile is None or not profile.email:
                reason = policy.NO_ADDRESS
            elif k:
                reason = policy.PRIORITY
            else:
                lo = t - s.cap_window
                recent = [sent for at, sent in st[SENT] if lo < at <= t]
                capped = len(recent) >= s.max_per_day
                capped = capped or recent.count(kind) >= s.max_per_type_per_day
                reason = policy.FREQUENCY_CAP if capped else None
                if reason is None and in_holdout(cid, s.holdout_share, s.holdout_salt):
                    reason = policy.HOLDOUT
                    st[SENT].append((t, kind))   # counts for the caps, as a send
            if reason is not None:
                out.append((AUDIT, (cid, kind, key, t, f"suppressed:{reason}")))
                continue
            canonical = json.dumps([cid, kind, key, t], ensure_ascii=True, separators=(",", ":"))
            mid = hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]
            horizon = t - RECENT_VIEW_TTL
            known = {p: v for p, v in st[RECENT].items() if v[0] > horizon}
            seeds = list(evidence) + [p for p in reversed(known) if p not in evidence]
            categories = [category] if category else []
            categories += [c for p in evidence if p in known and (c := known[p][1])]
            bought = {p for p, at in st[BOUGHT].items() if at > t - PURCHASED_TTL}
            tz = profile.time_zone or s.default_time_zone
            after = policy.send_after(t, tz, s)
            st[SENT].append((t, kind))
            out.append((PAYLOAD, (mid, cid, seeds, list(dict.fromkeys(categories)),
                                  sorted(set(st[CART]) | bought | set(evidence)), after,
                                  policy.expires_at(t, after, s), scored[1])))
            out.append((AUDIT, (cid, kind, key, t, policy.EMITTED)))
        self.emit_snapshot(st, t, scored)

    def features(self, st: list[Any], t: int) -> tuple[dict[str, Any], float]:
        """The snapshot's features at t and the engagement score."""
        f = st[WINDOWS].features(t)
        return {
            "views_1h": f.views_1h, "views_24h": f.views_24h, "cart_adds_24h": f.cart_adds_24h,
            "purchases_30d": f.purchases_30d, "revenue_30d": f.revenue_30d,
            "sessions_7d": f.sessions_7d, "email_opens_30d": 0, "email_clicks_30d": 0,
            "last_activity_at": f.last_activity_at,
        }, engagement_score(f, t)

    def emit_snapshot(self, st: list[Any], t: int, scored: tuple[dict[str, Any], float]) -> None:
        features, score = scored
        features["cart_items"] = len(st[CART])
        self.out.append((FEATURES, (st[CID], t, features, score, st[LAST_TRIGGER])))


def modelled(settings: Settings) -> Settings:
    """`settings` with the triggers the bound does not model switched off (every
    `core.*_enabled`): what the core is measured against it with. Cart abandonment and browse
    intensity stay; the catalog triggers fire only on catalog changes, which this data has not."""
    names = [f.name for f in dataclasses.fields(settings.core) if f.name.endswith("_enabled")]
    return settings.with_overrides([f"core.{name}=false" for name in names])


def bound_run(
    records: Sequence[BehaviourEvent | CustomerProfile], settings: CoreSettings, clock_ms: int
) -> list[Bound]:
    """The bound over `records` (arrival order): its outputs (kind, comparable tuple)."""
    out: list[Bound] = []
    _Bound(settings, clock_ms, out).run(records)
    return out


def comparable(out: Output) -> Bound:
    """What the test compares of a core output: a snapshot's (customer, time, score), a
    payload's message_id, an audit record's (customer, type, key, time, decision)."""
    kind, value = out
    if kind == FEATURES:
        return kind, (value.customer_id, value.as_of, value.engagement_score)
    if kind == PAYLOAD:
        return kind, (value.message_id,)
    if kind == AUDIT:
        return kind, (value.customer_id, value.type, value.key, value.fired_at, value.decision)
    return kind, ()


def comparable_bound(out: Bound) -> Bound:
    """The same of an output of the bound."""
    kind, value = out
    if kind == FEATURES:
        return kind, (value[0], value[1], value[3])
    if kind == PAYLOAD:
        return kind, (value[0],)
    if kind == AUDIT:
        return kind, value
    return kind, ()
