"""The keyed contract of the job, per customer, engine free (DESIGN.md section 3).

    step(state | None, item, watermark) -> (state | None, outputs, wake_at)
    wake(state | None, t)               -> (state | None, outputs, wake_at)

`step` only dedups, rejects late items and buffers; `wake(t)` processes every buffered item with
event time <= t in (event time, profiles first, event_id) order, interleaved with trigger
deadlines <= t (events at an instant before deadlines at that instant), then applies the
contact policy per instant. So outputs are those of processing in event-time order whatever
the arrival order, provided nothing arrives behind the watermark. Adapters keep the state,
turn `wake_at` into event-time timers (calling `wake` with the watermark, or the timer's time,
when one fires), and route outputs by kind (see transforms.model: PAYLOAD, AUDIT,
DEAD_LETTER, FEATURES, ERASE, DROPPED).

Size: the state is capped (DESIGN.md section 8; table in transforms/state.py). When one
customer's buffer passes `max_pending`, `step` processes its oldest items at once (`_overflow`):
none is lost, and that customer's later items behind them are late.

Lateness: an item is late when its event time is <= the watermark the adapter passes (that of
the item's own source partition, transforms/clock.py) or <= the time this customer was last
processed up to. Late events go to the dead-letter output with reason `late`, except consent
changes and erasure requests, applied at once whatever their lateness (DESIGN.md section 8), as
a late profile is (a CRM update is never dropped). Every email consent change is audited (type
consent_change) and, when it changes the consent held, written to the feature store at once
(CONSENT output), not with the write-behind snapshots.
"""

from __future__ import annotations

from operator import itemgetter

from transforms import attribution, policy
from transforms.bandit import Arms
from transforms.bounds import (
    EVICTED_CART,
    EVICTED_DEDUP,
    EVICTED_PENDING,
    EVICTED_PURCHASED,
    evict,
)
from transforms.catalog import Catalog
from transforms.catalog_changes import CatalogSignal
from transforms.clock import END_OF_TIME
from transforms.codec import encode_event
from transforms.compose import Composer
from transforms.model import (
    ADD_TO_CART,
    AUDIT,
    CONSENT,
    CONSENT_CHANGE,
    CUSTOMER_ERASURE,
    DEAD_LETTER,
    DROPPED,
    EMAIL_CHANNEL,
    EMAIL_CLICK,
    EMAIL_OPEN,
    ERASE,
    EVENT_TYPES,
    FEATURES,
    OUTCOME,
    PAYLOAD,
    PRODUCT_VIEW,
    PURCHASE,
    R_LATE,
    REMOVE_FROM_CART,
    AuditRecord,
    BehaviourEvent,
    ConsentState,
    CustomerProfile,
    DeadLetter,
    FeatureSnapshot,
    FiredTrigger,
    Origin,
    Output,
    PayloadRequest,
    Product,
)
from transforms.payload import message_id
from transforms.recommend import Recommender
from transforms.render import Renderer
from transforms.scoring import component_vector, score_of
from transforms.segments import Segment, SegmentLimits, SegmentModel, SegmentRules, segment_of
from transforms.settings import DAY, HOUR, CoreSettings
from transforms.sizes import dead_letter
from transforms.state import DUPLICATE, CustomerState, Item, entry_time, last_touch
from transforms.triggers import load_triggers, priorities
from transforms.windows import PURCHASE_WINDOW, Features

RECENT_VIEW_TTL = DAY
PURCHASED_TTL = 30 * DAY
PURGE_EVERY = HOUR  # an active customer's state is trimmed at most this often
_PROFILE_KEY = "profile"  # the audit key of a consent change stated by a profile
# Beyond any watermark an engine can send (Flink's MAX_WATERMARK is 2**63 - 1).
_NEVER = 1 << 64

Result = tuple[CustomerState | None, list[Output], list[int]]


_key = itemgetter(0, 1, 2)  # a Pending's (time, rank, id): its processing order (C, no tuple)


# Pending items are kept as (event time, rank, event_id, item): their processing order is
# the tuple order (profiles rank before events at the same instant, then by event_id).
Pending = tuple[int, int, str, Item]

class Core:
    """The rules, configured once: settings, triggers, recommender, catalog and templates."""

    def __init__(
        self,
        settings: CoreSettings | None = None,
        recommender: Recommender | None = None,
        catalog: Catalog | None = None,
        renderer: Renderer | None = None,
        segments: SegmentModel | None = None,
        snapshots: bool = True,
    ) -> None:
        self.settings = settings = settings or CoreSettings()
        # Feature snapshots (FEATURES outputs: write-behind and at each decision) only when
        # something writes them: an engine without a feature writer would compute and drop
        # them (a fifth of the core's time). Nothing else reads them; consent writes (CONSENT)
        # and erasures are output either way.
        self.snapshots = snapshots
        self.triggers = load_triggers(settings)
        # Segments at fire time and in snapshots (transforms/segments.py), and the triggers
        # limited to some of them (core.trigger_segments; SettingsError names what to fix).
        self.segment_rules = SegmentRules(settings, segments)
        limits = SegmentLimits(settings.trigger_segments, [t.type for t in self.triggers])
        limits.check_clusters(len(self.segment_rules.bias))
        self.segment_limits = limits if limits else None
        self.priorities = priorities(settings, [t.type for t in self.triggers])
        self.timed = [t for t in self.triggers if t.has_deadline]
        # Per event type, the triggers whose on_event wants it (their `event_types`).
        self.wanting = {
            etype: [t for t in self.triggers if etype in getattr(t, "event_types", EVENT_TYPES)]
            for etype in EVENT_TYPES
        }
        self.on_grant = [t for t in self.triggers if hasattr(t, "on_consent")]
        self.describing = {t.type: t for t in self.triggers if hasattr(t, "products")}
        self.signalled = [t for t in self.triggers if hasattr(t, "on_signal")]
        # The stateless half of an emitted trigger (recommend, render): see compose.py.
        self.composer = Composer(settings, recommender, catalog, renderer)
        self.compose = self.composer.compose
        # The second keyed stage, by trigger type: the variant of each message (bandit.py).
        self.arms = Arms(settings, self.composer.renderer.variants)
        self.max_dedup_ids = settings.max_dedup_ids
        self.max_pending = max(1, settings.max_pending)  # 0 would leave nothing to keep
        self.max_sessions = settings.max_sessions
        self.max_categories = settings.max_categories

    # ------------------------------------------------------------------ the keyed contract

    buffered_wake = staticmethod(entry_time)   # a BUFFERED step's wake (state.step_change)

    def step(self, state: CustomerState | None, item: Item, watermark: int | None = None) -> Result:
        """Take one input item of this customer: dedup, reject if late, else buffer it."""
        if state is None:
            state = CustomerState(item.customer_id)
        floor = watermark if watermark is not None else -_NEVER
        if state.processed_until is not None and state.processed_until > floor:
            floor = state.processed_until
        if isinstance(item, CustomerProfile):
            if item.updated_at > floor:
                state.pending.append((item.updated_at, 0, "", item))
                if len(state.pending) > self.max_pending:
                    return self._overflow(state, [])
                return state, [], [item.updated_at]
            state, outputs = self._catch_up(state, floor)
            self._apply_profile(state, item, outputs)  # late CRM update: newest still wins
            return self._finish(state, outputs, floor)
        seen_at = state.seen.get(item.event_id)
        if seen_at is not None and abs(item.occurred_at - seen_at) < self.settings.dedup_ttl:
            return state, [DUPLICATE], []
        if item.occurred_at <= floor:
            etype = item.event_type
            if isinstance(item, CatalogSignal):
                return self._finish(state, [(AUDIT, self._late_signal(item))], floor)
            if etype != CONSENT_CHANGE and etype != CUSTOMER_ERASURE:
                return self._finish(state, [(DEAD_LETTER, self._late(item, floor))], floor)
            # Never late: applied now, by its own time (as a late profile is).
            state, outputs = self._catch_up(state, floor)
            outputs += self._remember(state, item)
            if etype == CUSTOMER_ERASURE:
                self._erase(state, item, outputs)
            elif state.erased_at is not None:
                outputs.append((DROPPED, "erased"))
            else:
                self._apply_consent_event(state, item, outputs)
            return self._finish(state, outputs, floor)
        evicted = self._remember(state, item)
        # Catalog signals after the customer's events at their instant (a purchase then counts).
        rank = 2 if type(item) is CatalogSignal else 1
        state.pending.append((item.occurred_at, rank, item.event_id, item))
        if len(state.pending) > self.max_pending:
            return self._overflow(state, evicted)
        return state, evicted, [item.occurred_at]

    def wake(self, state: CustomerState | None, t: int) -> Result:
        """Event time has reached t: process everything due by t, in event-time order."""
        if state is None:
            return None, [], []
        outputs: list[Output] = []
        pending = state.pending
        if not pending:
            due: list[Pending] = []
        elif len(pending) == 1:
            due = pending if pending[0][0] <= t else []
            if due:
                state.pending = []
        else:
            pending.sort(key=_key)
            cut = 0
            while cut < len(pending) and pending[cut][0] <= t:
                cut += 1
            due, state.pending = pending[:cut], pending[cut:]
        self._advance(state, due, t, outputs)
        if state.processed_until is None or t > state.processed_until:
            state.processed_until = t
        return self._finish(state, outputs, t)

    def _catch_up(self, state: CustomerState, floor: int) -> tuple[CustomerState, list[Output]]:
        """Before a late item is applied: the wake the watermark has passed, if it has not
        happened yet (engines fire such timers before the next element; a batching adapter
        may not have), so the item meets the customer as of the watermark on every engine."""
        if self._next_wake(state) > floor:
            self._expire(state, floor)
            return state, []
        caught, outputs, _ = self.wake(state, floor)
        caught = caught or CustomerState(state.customer_id)
        self._expire(caught, floor)  # the item is applied at floor: what expired before is gone
        return caught, outputs

    def _overflow(self, state: CustomerState, outputs: list[Output]) -> Result:
        """Pending is over its cap (the watermark stalls, or one customer floods): process its
        oldest items now, as if event time had reached them, so none is lost; an item of this
        customer arriving later behind them is late (a dead letter), as behind a watermark.

        The cut keeps the newest cap - cap // 16 items, and keeps the instant of the oldest
        of them whole unless the whole oldest part is that one instant."""
        pending = state.pending
        pending.sort(key=_key)
        first_kept = pending[len(pending) - (self.max_pending - self.max_pending // 16)][0]
        cut = first_kept - 1 if first_kept > pending[0][0] else first_kept
        held = len(pending)
        after, out, wake_at = self.wake(state, cut)
        early = held - (len(after.pending) if after is not None else 0)
        return after, outputs + [(DROPPED, EVICTED_PENDING)] * early + out, wake_at

    def _remember(self, state: CustomerState, item: BehaviourEvent | CatalogSignal) -> list[Output]:
        """Keep the event's id for dedup; over `max_dedup_ids`, the oldest are evicted."""
        seen = state.seen
        seen[item.event_id] = item.occurred_at
        if len(seen) > self.max_dedup_ids:
            return [(DROPPED, EVICTED_DEDUP)] * evict(seen, self.max_dedup_ids)
        return []

    # ------------------------------------------------------------------ processing

    def _advance(
        self, state: CustomerState, due: list[Pending], t: int, outputs: list[Output]
    ) -> None:
        """Process `due` (sorted) and deadlines <= t, instant by instant."""
        timed = self.timed
        i, n = 0, len(due)
        while True:
            ts = due[i][0] if i < n else _NEVER
            slots = state.triggers  # a trigger without a slot has no deadline (base.py)
            for trig in timed:
                if trig.type in slots:
                    d = trig.deadline(state)
                    if d is not None and d < ts:
                        ts = d
            write = state.features_due
            if write is not None and write < ts:
                ts = write
            if ts > t:
                return
            self._expire(state, ts)
            fires: list[FiredTrigger] = []
            while i < n and due[i][0] == ts:
                item = due[i][3]
                i += 1
                if isinstance(item, CustomerProfile):
                    self._apply_profile(state, item, outputs)
                elif isinstance(item, CatalogSignal):
                    self._apply_signal(state, item, fires, outputs)
                else:
                    self._apply_event(state, item, fires, outputs)
            slots = state.triggers
            for trig in timed:
                if trig.type in slots and trig.deadline(state) == ts:
                    fires.extend(trig.on_deadline(state, ts))
            if fires:
                self._decide(state, fires, ts, outputs)
            if state.features_due == ts:
                state.features_due = None
                if self.snapshots:   # (a state from a job that wrote them)
                    outputs.append((FEATURES, self._snapshot(state, ts)))

    def _apply_profile(
        self, state: CustomerState, profile: CustomerProfile, outputs: list[Output]
    ) -> None:
        if state.erased_at is not None:
            return
        if state.profile is None or profile.updated_at >= state.profile.updated_at:
            state.profile = profile
        granted = profile.consents.get(EMAIL_CHANNEL)
        if granted is not None:
            at = profile.consent_updated_at
            if at is None:
                self._consent(state, granted, profile.updated_at, False, None, outputs)
            else:
                self._consent(state, granted, at, True, None, outputs)

    def _apply_consent_event(
        self, state: CustomerState, ev: BehaviourEvent, outputs: list[Output]
    ) -> None:
        if ev.consent_channel == EMAIL_CHANNEL and ev.consent_granted is not None:
            self._consent(state, ev.consent_granted, ev.occurred_at, True, ev.event_id, outputs)

    def _consent(
        self,
        state: CustomerState,
        granted: bool,
        at: int,
        timed: bool,
        event_id: str | None,
        outputs: list[Output],
    ) -> None:
        """One email consent statement, of a consent event (its id) or of a profile (None);
        state.set_consent decides if it wins. Events are always audited, profiles when they
        change the consent held; a change is written to the feature store at once."""
        held = state.consent
        cid = state.customer_id
        key = _PROFILE_KEY if event_id is None else event_id
        if not state.set_consent(granted, at, timed):
            if event_id is not None:
                audit = AuditRecord(cid, CONSENT_CHANGE, key, at, policy.CONSENT_SUPERSEDED)
                outputs.append((AUDIT, audit))
            return
        changed = held is None or held[0] != granted
        if event_id is not None or (changed and held is not None):
            decision = policy.CONSENT_GRANTED if granted else policy.CONSENT_REVOKED
            outputs.append((AUDIT, AuditRecord(cid, CONSENT_CHANGE, key, at, decision)))
        if changed:
            now = state.consent
            assert now is not None  # just taken
            outputs.append((CONSENT, ConsentState(cid, granted, now[1])))
            if granted:
                for trig in self.on_grant:
                    trig.on_consent(state, at, event_id is None and held is None)

    def _apply_event(
        self,
        state: CustomerState,
        ev: BehaviourEvent,
        fires: list[FiredTrigger],
        outputs: list[Output],
    ) -> None:
        s = self.settings
        ts = ev.occurred_at
        etype = ev.event_type
        if etype == CUSTOMER_ERASURE:
            self._erase(state, ev, outputs)
            return
        if state.erased_at is not None:
            outputs.append((DROPPED, "erased"))
            return
        windows = state.windows
        windows.touch(ts, ev.session_id)
        product = ev.product
        if etype == PRODUCT_VIEW:
            if product is not None:
                if product.category:
                    windows.add_view(ts, product.category)
                recent = state.recent_views
                recent.pop(product.product_id, None)
                recent[product.product_id] = (ts, product.category, product.brand, product.price)
                if len(recent) > self.settings.recent_items:
                    del recent[next(iter(recent))]
        elif etype == ADD_TO_CART:
            windows.add_cart(ts)
            if product is not None:
                cart = state.cart
                held = cart.get(product.product_id)
                qty = (held[0] if held else 0) + (ev.quantity or 1)
                cart[product.product_id] = (qty, product, ev.event_id)
                if len(cart) > s.max_cart_lines:
                    outputs += [(DROPPED, EVICTED_CART)] * evict(cart, s.max_cart_lines)
            state.cart_changed_at = ts
        elif etype == REMOVE_FROM_CART:
            if product is not None:
                state.cart.pop(product.product_id, None)
            state.cart_changed_at = ts
        elif etype == PURCHASE:
            # A multi-product order arrives as one purchase event per product, each carrying
            # the order's total: count the line (price x qty), the total only without a product.
            revenue: float | None = ev.order_total
            if product is not None and product.price is not None:
                revenue = product.price * (ev.quantity or 1)
            windows.add_purchase(ts, revenue or 0.0)
            if state.messages:
                self._attribute(state, ev, revenue or 0.0, outputs)
            if product is not None:
                purchased = state.purchased
                purchased.pop(product.product_id, None)  # insertion order = purchase order
                purchased[product.product_id] = ts
                if len(purchased) > s.max_purchased:
                    outputs += [(DROPPED, EVICTED_PURCHASED)] * evict(purchased, s.max_purchased)
            state.cart.clear()
            state.cart_changed_at = ts
        elif etype == EMAIL_OPEN or etype == EMAIL_CLICK:
            windows.add_email(ts, etype == EMAIL_CLICK)
            if state.messages:
                self._attribute(state, ev, 0.0, outputs)
        elif etype == CONSENT_CHANGE:
            self._apply_consent_event(state, ev, outputs)
        for trig in self.wanting.get(etype, self.triggers):
            fired = trig.on_event(state, ev)
            if fired:
                for f in fired:  # fires, and the reasons of what the trigger's slot evicted
                    if isinstance(f, str):
                        outputs.append((DROPPED, f))
                    else:
                        fires.append(f)
        if len(windows.sessions) > self.max_sessions or len(windows.views) > self.max_categories:
            evicted = windows.bound(self.max_sessions, self.max_categories)
            outputs += [(DROPPED, reason) for reason in evicted]
        if state.features_due is None and self.snapshots:
            # Write-behind: one snapshot per interval, at its end, covering all it saw.
            state.features_due = ts + self.settings.feature_write_interval

    def _attribute(
        self, state: CustomerState, ev: BehaviourEvent, revenue: float, outputs: list[Output]
    ) -> None:
        """An open, click or purchase as the outcome of a remembered send, if it is one."""
        outcome = attribution.attribute(
            state.messages, ev, revenue, self.settings.attribution_window
        )
        if outcome is not None:
            outputs.append((OUTCOME, outcome))

    def _remember_send(
        self, state: CustomerState, fired: FiredTrigger, mid: str, holdout: bool,
        outputs: list[Output],
    ) -> None:
        """A send (or a held-out would-be send): it counts for the caps, and is remembered
        for attribution."""
        t = fired.fired_at
        state.sent.append((t, fired.type))
        sent = (t, mid, fired.type, holdout)
        evicted = attribution.remember(state.messages, sent, self.settings.max_attributed_messages)
        if evicted:
            outputs += [(DROPPED, attribution.EVICTED_MESSAGES)] * evicted
    def _apply_signal(
        self, state: CustomerState, signal: CatalogSignal, fires: list[FiredTrigger],
        outputs: list[Output],
    ) -> None:
        """A product stage's signal (transforms/product_stage.py): only the signal triggers
        see it; it is no activity of the customer (windows and features are left alone)."""
        if state.erased_at is not None:
            outputs.append((DROPPED, "erased"))
            return
        for trig in self.signalled:
            for f in trig.on_signal(state, signal):
                if isinstance(f, str):
                    outputs.append((DROPPED, f))
                else:
                    fires.append(f)

    def _late_signal(self, signal: CatalogSignal) -> AuditRecord:
        """A signal behind this customer's progress (see transforms/product_stage.py): it
        has no raw form to dead-letter, so its trigger is audited suppressed:late."""
        return AuditRecord(signal.customer_id, signal.event_type, signal.product_id,
                           signal.occurred_at, f"suppressed:{R_LATE}")

    def _erase(self, state: CustomerState, ev: BehaviourEvent, outputs: list[Output]) -> None:
        """GDPR erasure: forget everything but the dedup ids and the tombstone."""
        cid = state.customer_id
        seen, pending, processed = state.seen, state.pending, state.processed_until
        state.__init__(cid)  # type: ignore[misc]
        state.seen, state.pending, state.processed_until = seen, pending, processed
        state.erased_at = ev.occurred_at
        outputs.append((ERASE, cid))
        outputs.append((AUDIT, AuditRecord(cid, CUSTOMER_ERASURE, "", ev.occurred_at, "erased")))

    def _decide(
        self, state: CustomerState, fires: list[FiredTrigger], t: int, outputs: list[Output]
    ) -> None:
        cid = state.customer_id
        # The windows do not change here: one features / score serves the payload and the
        # snapshot at t (an erased customer gets neither).
        scored = None if state.erased_at is not None else self._score(state, t)
        segment = None if scored is None else self._segment(state, t, scored)
        limits = self.segment_limits
        allowed = None if limits is None else (lambda kind: limits.allows(kind, segment))
        decisions = policy.decide(state, fires, t, self.settings, self.priorities, allowed)
        for fired, reason in decisions:
            state.last_trigger = fired.type
            if reason == policy.HOLDOUT:
                # The would-be message: audited with its id, remembered, no payload.
                mid = message_id(cid, fired.type, fired.key, t)
                self._remember_send(state, fired, mid, True, outputs)
                audit = AuditRecord(cid, fired.type, fired.key, t, f"suppressed:{reason}", mid)
                outputs.append((AUDIT, audit))
                continue
            if reason is not None:
                audit = AuditRecord(cid, fired.type, fired.key, t, f"suppressed:{reason}")
                outputs.append((AUDIT, audit))
                continue
            assert scored is not None  # policy.decide suppresses everything for the erased
            request = self._request(state, fired, scored[1], segment)
            self._remember_send(state, fired, request.message_id, False, outputs)
            outputs.append((PAYLOAD, request))
            outputs.append(
                (
                    AUDIT,
                    AuditRecord(cid, fired.type, fired.key, t, policy.EMITTED, request.message_id),
                )
            )
        if scored is not None and self.snapshots:
            outputs.append((FEATURES, self._snapshot(state, t, scored, segment)))

    # ------------------------------------------------------------------ payload

    def _request(
        self, state: CustomerState, fired: FiredTrigger, score: float,
        segment: Segment | None = None,
    ) -> PayloadRequest:
        """Everything of an emitted trigger that depends on the state; the compose stage
        (transforms/compose.py) recommends and renders from it."""
        s = self.settings
        profile = state.profile
        assert profile is not None and profile.email  # policy.decide checked both
        t = fired.fired_at
        horizon = t - RECENT_VIEW_TTL
        # Filter by time here, not by the last purge, so results never depend on purge timing.
        known = {
            p: Product(p, category, brand, price)
            for p, (at, category, brand, price) in state.recent_views.items()
            if at > horizon
        }
        recent = [p for p in reversed(known)]
        known.update({pid: entry[1] for pid, entry in state.cart.items()})
        describing = self.describing.get(fired.type)
        if describing is not None:  # products the trigger's own slot describes (base.py)
            known.update(describing.products(state))
        if fired.details is not None and "product" in fired.details:
            signalled: Product = fired.details["product"]  # its price is the new one
            known[signalled.product_id] = signalled
        evidence = fired.evidence
        seeds = list(evidence) + [p for p in recent if p not in evidence]
        categories = [fired.category] if fired.category else []
        categories += [c for p in evidence if p in known and (c := known[p].category)]
        bought = {p for p, at in state.purchased.items() if at > t - PURCHASED_TTL}
        tz = profile.time_zone or s.default_time_zone
        defer = policy.send_after(t, tz, s)
        return PayloadRequest(
            message_id=message_id(state.customer_id, fired.type, fired.key, t),
            customer_id=state.customer_id,
            profile=profile,
            trigger=fired,
            engagement_score=score,
            seeds=seeds,
            categories=list(dict.fromkeys(categories)),
            exclude=sorted(set(state.cart) | bought | set(evidence)),
            known=known,
            time_zone=tz,
            send_after=defer,
            expires_at=policy.expires_at(t, defer, s),
            segment=segment,
        )

    @staticmethod
    def _score(state: CustomerState, t: int) -> tuple[Features, float, list[float]]:
        f = state.windows.features(t)
        components = component_vector(f, t)
        return f, score_of(components), components

    def _segment(
        self, state: CustomerState, t: int, scored: tuple[Features, float, list[float]]
    ) -> Segment:
        profile = state.profile
        stage = None if profile is None else profile.lifecycle_stage
        return segment_of(scored[0], t, scored[1], scored[2], stage, self.segment_rules)

    def _snapshot(
        self,
        state: CustomerState,
        t: int,
        scored: tuple[Features, float, list[float]] | None = None,
        segment: Segment | None = None,
    ) -> FeatureSnapshot:
        scored = scored or self._score(state, t)
        f, score = scored[0], scored[1]
        seg = segment or self._segment(state, t, scored)
        return FeatureSnapshot(
            state.customer_id,
            t,
            {
                "views_1h": f.views_1h,
                "views_24h": f.views_24h,
                "cart_adds_24h": f.cart_adds_24h,
                "purchases_30d": f.purchases_30d,
                "revenue_30d": f.revenue_30d,
                "sessions_7d": f.sessions_7d,
                "email_opens_30d": f.email_opens_30d,
                "email_clicks_30d": f.email_clicks_30d,
                "last_activity_at": f.last_activity_at,
                "cart_items": len(state.cart),
                "rfm_r": seg.r,
                "rfm_f": seg.f,
                "rfm_m": seg.m,
                "lifecycle": seg.lifecycle,
                "engagement_tier": seg.engagement_tier,
                "cluster": seg.cluster,
                "crm_stage": seg.crm_stage,
            },
            score,
            state.last_trigger,
        )

    def _late(self, ev: BehaviourEvent, floor: int) -> DeadLetter:
        return dead_letter(
            encode_event(ev),
            ev.origin or Origin("unknown"),
            R_LATE,
            f"occurred_at {ev.occurred_at} is behind the watermark {floor}",
            floor,
            self.settings,
        )

    # ------------------------------------------------------------------ expiry

    def _finish(self, state: CustomerState, outputs: list[Output], now: int) -> Result:
        """Trim expired parts (at most every PURGE_EVERY), then the next wake, or None state.

        The purge wake is the next time some part of the state wholly expires, at least an hour
        on and rounded up to the hour so one timer serves many events: an idle customer wakes a
        handful of times, an active one is trimmed at most hourly, and the state is None once
        all of it has expired.
        """
        if now >= END_OF_TIME and not state.pending:
            return None, outputs, []  # every part of the state expires before the end of time
        if state.next_purge is None and now < END_OF_TIME:
            # A new state has nothing old to trim: first purge an hour on.
            state.next_purge = (now + PURGE_EVERY) // PURGE_EVERY * PURGE_EVERY + PURGE_EVERY
        elif state.next_purge is None or now >= state.next_purge:
            self._purge(state, now)
            ends = self._part_ends(state)
            if not ends:
                return None, outputs, []
            due = max(min(ends), now + PURGE_EVERY)
            state.next_purge = -(-due // PURGE_EVERY) * PURGE_EVERY
        return state, outputs, [self._next_wake(state)]

    def _next_wake(self, state: CustomerState) -> int:
        """The earliest time the customer's state needs a wake (purge, snapshot, pending
        item or trigger deadline); _NEVER if none."""
        wake = _NEVER if state.next_purge is None else state.next_purge
        if state.features_due is not None and state.features_due < wake:
            wake = state.features_due
        if state.pending:
            wake = min(wake, min(p[0] for p in state.pending))
        slots = state.triggers
        for trig in self.timed:
            if trig.type in slots:
                d = trig.deadline(state)
                if d is not None and d < wake:
                    wake = d
        return wake

    def _purge(self, state: CustomerState, now: int) -> None:
        s = self.settings
        seen = state.seen
        if seen:
            horizon = now - s.dedup_ttl
            for eid in [e for e, at in seen.items() if at <= horizon]:
                del seen[eid]
        state.windows.purge(now)
        if (
            state.cart
            and state.cart_changed_at is not None
            and state.cart_changed_at <= now - s.cart_ttl
        ):
            state.cart.clear()
        if state.recent_views:
            state.recent_views = {
                p: v for p, v in state.recent_views.items() if v[0] > now - RECENT_VIEW_TTL
            }
        if state.purchased:
            state.purchased = {
                p: at for p, at in state.purchased.items() if at > now - PURCHASED_TTL
            }
        if state.sent:
            state.sent = [(at, kind) for at, kind in state.sent if at > now - s.cap_window]
        if state.messages:
            state.messages = attribution.purge(state.messages, now, s.attribution_window)
        for trig in self.triggers:
            trig.purge(state, now)
        if state.erased_at is not None and state.erased_at <= now - s.erasure_ttl:
            state.erased_at = None
        last = self._last_touch(state)
        known = state.profile is not None or state.consent is not None
        if known and (last is None or last <= now - s.profile_ttl) and not self._armed(state):
            state.profile = None  # kept while a deadline is armed: its fire needs them
            state.consent = None

    def _expire(self, state: CustomerState, t: int) -> None:
        """Before instant t: drop what a purge at t - 1 would have dropped of what the rules
        and outputs read (an expired cart, erasure tombstone, profile and consent), so no output
        depends on when purges ran, that is on how an engine splits its wakes."""
        s = self.settings
        changed = state.cart_changed_at
        if state.cart and changed is not None and changed < t - s.cart_ttl:
            state.cart.clear()
        erased = state.erased_at
        if erased is not None and erased < t - s.erasure_ttl:
            state.erased_at = None
        profile, consent = state.profile, state.consent
        if profile is None and consent is None:
            return
        floor = t - s.profile_ttl  # _purge at t - 1 drops them if every touch is behind it
        if (profile is None or profile.updated_at < floor) and (
            consent is None or consent[1] < floor
        ):
            last = state.windows.last_activity  # gone from the windows at t - 1 if expired
            if (last is None or last < floor or last < t - PURCHASE_WINDOW) and not self._armed(
                state
            ):
                state.profile = None
                state.consent = None

    def _armed(self, state: CustomerState) -> int | None:
        """The latest armed trigger deadline, if any."""
        deadlines = [d for trig in self.timed if (d := trig.deadline(state)) is not None]
        return max(deadlines) if deadlines else None

    def _last_touch(self, state: CustomerState) -> int | None:
        """The newest time anything was learnt about the customer (activity or profile)."""
        return last_touch(state)

    def _part_ends(self, state: CustomerState) -> list[int]:
        """For each non-empty part of the state, when all it holds will have expired."""
        s = self.settings
        ends: list[int] = []
        if state.pending:
            ends.append(_NEVER)
        if state.features_due is not None:
            ends.append(state.features_due)
        if state.seen:
            ends.append(max(state.seen.values()) + s.dedup_ttl)
        w = state.windows.expires_at()
        if w is not None:
            ends.append(w)
        if state.cart and state.cart_changed_at is not None:
            ends.append(state.cart_changed_at + s.cart_ttl)
        if state.recent_views:
            ends.append(max(v[0] for v in state.recent_views.values()) + RECENT_VIEW_TTL)
        if state.purchased:
            ends.append(max(state.purchased.values()) + PURCHASED_TTL)
        if state.sent:
            ends.append(max(at for at, _ in state.sent) + s.cap_window)
        end = attribution.expires_at(state.messages, s.attribution_window)
        if end is not None:
            ends.append(end)
        for trig in self.triggers:
            e = trig.expires_at(state)
            if e is not None:
                ends.append(e)
        if state.erased_at is not None:
            ends.append(state.erased_at + s.erasure_ttl)
        if state.profile is not None or state.consent is not None:
            ends.append(
                max((self._last_touch(state) or 0) + s.profile_ttl, self._armed(state) or 0)
            )
        return ends

