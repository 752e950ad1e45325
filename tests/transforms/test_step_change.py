"""state.step_change and state.rebuffer: what a step changed, so that an engine whose state
writes cost per byte (Flink's PerCustomer) writes only that.

The claim checked on every step: UNCHANGED leaves the state's bytes as they were; BUFFERED
means the state is exactly the one before it with state.rebuffer of the one entry the step
appended; everything else is CHANGED (the engine writes the whole state). The hostile cases
come first: a duplicate, a profile (no event id), an id seen again past dedup_ttl (set in
place in `seen`, not appended), the dedup and pending caps (evictions), late items, and a
state's first step.
"""

from __future__ import annotations

import pickle
from collections import Counter

from pipelines.reference import ReferenceRunner
from runners.catalog_traffic import CatalogTrafficConfig, with_catalog_changes
from runners.traffic import Malformed, Traffic, TrafficConfig
from tests.builders import HOUR, MINUTE, T0, add, consent, profile, view
from transforms.core import Core
from transforms.product_stage import ProductStage
from transforms.settings import DAY, CoreSettings
from transforms.state import BUFFERED, CHANGED, UNCHANGED, CustomerState, rebuffer, step_change

DEDUP_TTL = DAY


def canon(x: object) -> object:
    """`x` as nested plain values, in order (dicts in insertion order): equal for equal
    states whatever objects they share (pickle's bytes differ with what its memo shares)."""
    if x is None or isinstance(x, (bool, int, float, str, bytes, type)):
        return x
    if isinstance(x, (list, tuple)):
        return type(x).__name__, [canon(i) for i in x]
    if isinstance(x, dict):
        return "dict", [(canon(k), canon(v)) for k, v in x.items()]
    reduced = x.__reduce_ex__(4)
    return type(x).__qualname__, canon(reduced[1]), canon(reduced[2] if len(reduced) > 2 else None)


def same(a: object, b: object) -> bool:
    return canon(a) == canon(b)


def check(before: bytes | None, held: int | None, state, outputs, wake_at,  # type: ignore[no-untyped-def]
          buffered_wake) -> int:
    """step_change of one step, after checking its claim: UNCHANGED leaves the state as it was
    (`before`: pickled), BUFFERED is exactly state.rebuffer of the one entry appended, and
    asked for the stage's buffered_wake of it."""
    change = step_change(held, state, outputs, wake_at, buffered_wake)
    if change == UNCHANGED:
        assert before is not None and same(pickle.loads(before), state)
        assert wake_at == []
    elif change == BUFFERED:
        assert before is not None and state is not None
        rebuilt = pickle.loads(before)
        assert rebuffer(rebuilt, [state.pending[-1]]) == 1
        assert same(rebuilt, state)
        assert wake_at == [buffered_wake(state.pending[-1])]
    return change


class Checked:
    """Checks step_change's claim on every step the stage it is mixed into takes (and counts
    them): the core (PerCustomer) and the product stage (PerProduct) both rely on it."""

    def __init__(self, settings: CoreSettings | None = None) -> None:
        super().__init__(settings)  # type: ignore[call-arg]
        self.changes: Counter[int] = Counter()

    def step(self, state, item, watermark=None):  # type: ignore[no-untyped-def]
        before = None if state is None else pickle.dumps(state)
        held = None if state is None else len(state.pending)
        state, outputs, wake_at = super().step(state, item, watermark)  # type: ignore[misc]
        self.changes[check(before, held, state, outputs, wake_at, self.buffered_wake)] += 1
        return state, outputs, wake_at


class CheckedStage(Checked, ProductStage):
    """The product stage, checked."""


class CheckedCore(Checked, Core):
    """The core, checked."""


def step(core: Core, state: CustomerState | None, item, watermark=None):  # type: ignore[no-untyped-def]
    held = None if state is None else len(state.pending)
    state, outputs, wake_at = core.step(state, item, watermark)
    return state, step_change(held, state, outputs, wake_at, core.buffered_wake)


def test_a_first_step_is_a_change_whatever_it_does():
    state, change = step(CheckedCore(), None, view(T0))
    assert change == CHANGED and state is not None and len(state.pending) == 1


def test_a_duplicate_changes_nothing_and_a_new_event_is_buffered():
    core = CheckedCore()
    first = view(T0)
    state, _ = step(core, None, first)
    state, change = step(core, state, first)
    assert change == UNCHANGED
    state, change = step(core, state, view(T0 + MINUTE))
    assert change == BUFFERED and len(state.pending) == 2


def test_a_buffered_profile_sets_no_event_id():
    core = CheckedCore()
    state, _ = step(core, None, view(T0))
    seen = dict(state.seen)
    state, change = step(core, state, profile(T0 + MINUTE))
    assert change == BUFFERED and state.seen == seen and state.pending[-1][1] == 0


def test_an_id_seen_again_past_dedup_ttl_is_set_in_place_and_rebuilt_in_place():
    core = CheckedCore(CoreSettings(dedup_ttl=DEDUP_TTL))
    early = view(T0)
    state, _ = step(core, None, early)
    state, _ = step(core, state, add(T0 + MINUTE))
    again = view(T0 + DEDUP_TTL, eid=early.event_id)   # |dt| == ttl: not a duplicate
    state, change = step(core, state, again)
    assert change == BUFFERED
    assert list(state.seen)[0] == early.event_id and state.seen[early.event_id] == T0 + DEDUP_TTL
    within = view(T0 + DEDUP_TTL - 1, eid=early.event_id)  # 1 ms inside: a duplicate
    assert step(core, state, within)[1] == UNCHANGED


def test_evictions_and_overflow_are_changes():
    core = CheckedCore(CoreSettings(max_dedup_ids=2, max_pending=64))
    state, _ = step(core, None, view(T0))
    state, change = step(core, state, view(T0 + 1))
    assert change == BUFFERED
    state, change = step(core, state, view(T0 + 2))          # a third id: the oldest evicted
    assert change == CHANGED
    core = CheckedCore(CoreSettings(max_pending=4))
    state, _ = step(core, None, view(T0))
    changes = []
    for i in range(1, 5):
        state, change = step(core, state, view(T0 + i * MINUTE))
        changes.append(change)
    assert changes == [BUFFERED, BUFFERED, BUFFERED, CHANGED]   # the fifth overflows


def test_late_items_are_changes_even_when_they_output_nothing():
    core = CheckedCore()
    state, _ = step(core, None, view(T0))
    late_profile = profile(T0 - HOUR)
    state, change = step(core, state, late_profile, T0 + MINUTE)   # applied at once
    assert change == CHANGED
    state, change = step(core, state, view(T0 - MINUTE), T0 + MINUTE)   # a late dead letter
    assert change == CHANGED
    state, change = step(core, state, consent(T0 - MINUTE, False), T0 + MINUTE)
    assert change == CHANGED


def test_rebuffer_repeats_several_steps_in_their_order():
    core = Core()
    state, _, _ = core.step(None, view(T0))
    base = pickle.dumps(state)
    items = [add(T0 + 2 * MINUTE), profile(T0 + MINUTE), view(T0 + MINUTE, "p2")]
    for item in items:
        state, _, _ = core.step(state, item)
    rebuilt = pickle.loads(base)
    assert not same(rebuilt, state)          # (canon tells states apart)
    assert rebuffer(rebuilt, state.pending[1:]) == 3
    assert same(rebuilt, state)


def test_every_step_of_generated_traffic_keeps_the_claim():
    # Duplicates, arrivals 12 s out of order (so late items behind the watermark), profiles,
    # consent, catalog signals, through the reference runner's clock and timers.
    cfg = TrafficConfig(events=4_000, customers=150, rate=5.0, seed=3,
                        duplicate_ratio=0.05, out_of_order_ms=12_000)
    items = [i for i in with_catalog_changes(Traffic(cfg), CatalogTrafficConfig(every=40))
             if not isinstance(i, Malformed)]
    settings = CoreSettings(max_dedup_ids=64, max_pending=24, max_change_ids=4)
    core = CheckedCore(settings)
    runner = ReferenceRunner(core, lambda _: None, clock=lambda: T0 + 400 * DAY,
                             fire_every=50)
    stage = runner.products.stage = CheckedStage(settings)
    for item in items:
        runner.feed(item)
    runner.finish()
    seen = core.changes
    assert seen[BUFFERED] > 2_000 and seen[UNCHANGED] > 50 and seen[CHANGED] > 100, seen
    seen = stage.changes                         # product events and catalog changes
    assert seen[BUFFERED] > 2_000 and seen[CHANGED] > 100, seen


def test_the_step_that_asks_to_fold_interest_in_is_a_change():
    # A buffered view asks for no wake of its own (its expiry); the one that makes fold
    # + 1 asks for the oldest's time: an engine must write that timer, so it is CHANGED.
    FOLD_AFTER = CoreSettings().interest_fold  # noqa: N806

    stage = CheckedStage(CoreSettings())
    state, asked = None, []
    for i in range(FOLD_AFTER + 5):
        state, _, wake_at = stage.step(state, view(T0 + i, cid=f"c{i}"), T0 - 1)
        asked.append(wake_at)
    assert stage.changes == Counter({BUFFERED: FOLD_AFTER + 3, CHANGED: 2})
    assert asked[FOLD_AFTER] == [T0] and asked[FOLD_AFTER + 1] == asked[1] != [T0]
