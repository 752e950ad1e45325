"""The arms stage: Thompson sampling per trigger over epochs (transforms/bandit.py)."""

import pickle
from collections import Counter

import pytest

from tests.builders import HOUR, MINUTE, T0, profile
from transforms import bandit
from transforms.bandit import Arms, ArmsState, draw
from transforms.model import DROPPED, OUTCOME, PAYLOAD, FiredTrigger, Outcome, PayloadRequest
from transforms.settings import CoreSettings
from transforms.state import BUFFERED, CHANGED

EPOCH = HOUR
E0 = (T0 // EPOCH + 1) * EPOCH      # the start of an epoch (T0 is 12:00, so E0 is 13:00)
E1 = E0 + EPOCH                     # the start of the next one
KIND = "cart_abandonment"
VARIANTS = ("a", "b")


def arms(**kw) -> Arms:
    return Arms(CoreSettings(**kw), lambda kind: VARIANTS)


def request(t: int, mid: str, cid: str = "c1", kind: str = KIND) -> PayloadRequest:
    return PayloadRequest(mid, cid, profile(cid=cid), FiredTrigger(kind, "k", t, []), 0.5, [], [],
                          [], {}, "UTC", None, t + HOUR)


def outcome(mid: str, fired: int, t: int, kind: str = "click", holdout: bool = False,
            eid: str | None = None) -> Outcome:
    return Outcome(mid, "c1", KIND, None, kind, 0.0, t, fired, holdout, eid or f"e-{mid}-{t}")


def run(a: Arms, items, state=None, until: int | None = None):
    """Step items with the watermark just below each (never late), then wake at `until`."""
    out = []
    for item in items:
        t = item.trigger.fired_at if isinstance(item, PayloadRequest) else item.occurred_at
        state, o, _ = a.step(state, item, t - 1)
        out += o
    if until is not None:
        state, o, _ = a.wake(state, until)
        out += o
    return state, out


def chosen(out) -> dict[str, str]:
    return {r.message_id: r.variant for kind, r in out if kind == PAYLOAD}


def test_the_draw_is_seeded_by_the_message_id():
    counts = {"a": [10, 3], "b": [10, 1]}
    assert draw("m-1", VARIANTS, counts) == draw("m-1", VARIANTS, counts)
    picks = Counter(draw(f"m-{i}", VARIANTS, counts) for i in range(2000))
    assert picks["a"] > picks["b"] > 0       # a's posterior is better, b still explored
    flat = Counter(draw(f"m-{i}", VARIANTS, {}) for i in range(2000))
    assert 800 < flat["a"] < 1200            # no data: about even


def test_a_request_waits_for_the_watermark_to_reach_its_epoch_start_minus_one():
    a = arms()
    state, out, wake = a.step(None, request(E0 + MINUTE, "m1"), E0 - 2)
    assert out == [] and wake == [E0 - 1]
    state, out, wake = a.wake(state, E0 - 1)
    assert set(chosen(out)) == {"m1"} and wake == []


def test_an_outcome_at_the_epoch_start_minus_one_counts_for_the_epoch_one_at_the_start_not():
    a = arms()
    # Ten sends in the epoch before E0, all of variant-a clicked just before E0.
    sends = [request(E0 - EPOCH + i * MINUTE, f"s{i}") for i in range(10)]
    state, out = run(a, sends, until=E0 - EPOCH + 20 * MINUTE)
    variants = chosen(out)
    clicks = [outcome(m, E0 - EPOCH + i * MINUTE, E0 - 1) for i, (m, v) in
              enumerate(sorted(variants.items())) if v == "a"]
    state, out = run(a, clicks, state)
    assert a.counts_before(state, a.epoch_of(E0)) == {
        "a": [sum(v == "a" for v in variants.values()), len(clicks)],
        "b": [sum(v == "b" for v in variants.values()), 0]}
    # A click at E0 of a variant-b message is after the start of E0: only later epochs see it.
    i, b = next((i, m) for i, (m, v) in enumerate(sorted(variants.items())) if v == "b")
    state, out = run(a, [outcome(b, E0 - EPOCH + i * MINUTE, E0)], state)
    assert [o.variant for k, o in out if k == OUTCOME] == ["b"]
    assert a.counts_before(state, a.epoch_of(E0))["b"][1] == 0
    state, _ = run(a, [], state, until=E1 - 1)
    assert a.counts_before(state, a.epoch_of(E1))["b"][1] == 1


def test_a_fire_uses_only_the_counts_before_its_epoch():
    a = arms()
    heavy = {"a": [100, 0], "b": [100, 90]}     # b is far better
    state = ArmsState(KIND)
    state.deltas[a.epoch_of(E0) - 1] = {v: list(r) for v, r in heavy.items()}
    # Counts in E0 itself (a wins everything there) must not change a fire in E0.
    state.deltas[a.epoch_of(E0)] = {"a": [1000, 1000]}
    state.watermark = E0 - 1
    state, out = run(a, [request(E0 + MINUTE + i, f"x{i}") for i in range(50)], state)
    picks = Counter(chosen(out).values())
    assert picks["b"] > 40
    for mid, v in chosen(out).items():
        assert v == draw(mid, VARIANTS, heavy)


def test_every_message_is_rewarded_once_at_its_first_click():
    a = arms()
    state, out = run(a, [request(E0 + MINUTE, "m1")], until=E0 + MINUTE)
    v = chosen(out)["m1"]
    clicks = [outcome("m1", E0 + MINUTE, E0 + 30 * MINUTE, eid="c2"),
              outcome("m1", E0 + MINUTE, E0 + 10 * MINUTE, eid="c1"),  # earlier, arrives later
              outcome("m1", E0 + MINUTE, E0 + 40 * MINUTE, eid="c3")]
    out = []
    for c in clicks:                       # all arrive ahead of the watermark
        state, o, _ = a.step(state, c, E0 + 5 * MINUTE)
        out += o
    assert [o.variant for k, o in out if k == OUTCOME] == [v, v, v]
    assert state.deltas[a.epoch_of(E0)][v] == [1, 1]
    assert state.rewarded["m1"][0] == E0 + 10 * MINUTE


def test_opens_reward_only_with_the_open_setting_and_holdout_is_not_counted():
    for reward, rewarded in (("click", 0), ("open", 1)):
        a = arms(bandit_reward=reward)
        state, out = run(a, [request(E0 + MINUTE, "m1")], until=E0 + MINUTE)
        state, out = run(a, [outcome("m1", E0 + MINUTE, E0 + 2 * MINUTE, "open"),
                             outcome("h1", E0, E0 + 3 * MINUTE, "click", holdout=True)], state)
        held = [o for k, o in out if k == OUTCOME and o.holdout]
        assert [o.variant for o in held] == [None]
        assert sum(r[1] for r in state.deltas[a.epoch_of(E0)].values()) == rewarded


def test_uniform_and_fixed_policies():
    uniform = arms(variant_policy="uniform")
    _, out = run(uniform, [request(E0 + i, f"m{i}", cid=f"c{i}") for i in range(40)], until=E1)
    from transforms.render import choose_variant
    for r in (r for k, r in out if k == PAYLOAD):
        assert r.variant == choose_variant(r.customer_id, KIND, VARIANTS)
    _, out = run(arms(variant_policy="fixed:b"), [request(E0 + i, f"m{i}") for i in range(9)],
                 until=E1)
    assert set(chosen(out).values()) == {"b"}
    with pytest.raises(ValueError):
        arms(variant_policy="greedy")
    with pytest.raises(ValueError):
        arms(bandit_reward="purchase")


def test_arrival_order_and_batching_do_not_change_choices():
    a = arms()
    sends = [request(E0 - EPOCH + i * 7 * MINUTE, f"s{i}") for i in range(8)]
    state, out = run(a, sends, until=E0 - 1)
    first = chosen(out)
    clicks = [outcome(m, E0 - EPOCH + int(m[1:]) * 7 * MINUTE, E0 + 5 * MINUTE + int(m[1:]))
              for m, v in first.items() if v == "a"]
    later = [request(E1 + i * MINUTE, f"n{i}") for i in range(30)]
    one_by_one = chosen(run(a, clicks + later, pickle.loads(pickle.dumps(state)), E1 + HOUR)[1])
    # The same items, all arriving while the watermark is still before E0, in reverse.
    b, out2 = pickle.loads(pickle.dumps(state)), []
    for item in reversed(clicks + later):
        b, o, _ = a.step(b, item, None)
        out2 += o
    b, o, _ = a.wake(b, E1 + HOUR)
    assert chosen(out2 + o) == one_by_one


def test_an_item_behind_the_watermark_is_processed_and_counted():
    a = arms()
    state, out, _ = a.step(None, request(E0, "m1"), E0 + 5)
    assert chosen(out) and (DROPPED, bandit.ARMS_LATE) in out


def test_old_epochs_fold_and_rewarded_messages_expire():
    a = arms(max_bandit_rewarded=3)
    state, out = run(a, [request(E0 + i, f"m{i}") for i in range(5)], until=E0 + 10)
    state, out = run(a, [outcome(f"m{i}", E0 + i, E0 + MINUTE + i) for i in range(5)], state)
    assert out.count((DROPPED, bandit.EVICTED_REWARDED)) == 2
    assert len(state.rewarded) <= 3
    before = a.counts_before(state, a.epoch_of(E1))
    state, _, _ = a.wake(state, E0 + 80 * HOUR)
    assert state.rewarded == {} and state.deltas == {}
    assert a.counts_before(state, a.epoch_of(E0 + 81 * HOUR)) == before


# ------------------------------------------------------------------ state kept in parts


def _claimed(a: Arms, state, item, watermark):
    """One step, with Arms.step_change's claim checked: BUFFERED is exactly Arms.rebuffer of
    the entry it appended, asking for buffered_wake of it."""
    from tests.transforms.test_step_change import same

    before = None if state is None else pickle.dumps(state)
    held = Arms.held(state)
    state, out, wake_at = a.step(state, item, watermark)
    change = a.step_change(held, state, out, wake_at)
    if change == BUFFERED:
        rebuilt = pickle.loads(before)
        assert Arms.rebuffer(rebuilt, [state.pending[-1]]) == 1
        assert same(rebuilt, state)
        assert wake_at == [a.buffered_wake(state.pending[-1])]
    return state, out, change


def test_a_step_that_moves_the_watermark_is_a_change_even_with_nothing_ready():
    a = arms()
    state, _, change = _claimed(a, None, request(E1 + MINUTE, "m1"), E0 - 10)
    assert change == CHANGED                     # a new state
    state, out, change = _claimed(a, state, request(E1 + 2 * MINUTE, "m2"), E0 - 10)
    assert change == BUFFERED and out == []
    state, out, change = _claimed(a, state, request(E1 + 3 * MINUTE, "m3"), E0 - 5)
    assert out == [] and change == CHANGED and state.watermark == E0 - 5
    state, out, change = _claimed(a, state, request(E0 - 3, "m4"), E0 - 5)
    assert chosen(out) and change == CHANGED     # ready: processed at once


def test_every_step_of_mixed_traffic_keeps_the_claim():
    import random

    rng = random.Random(7)
    a, state, seen = arms(), None, Counter()
    watermark: int | None = None
    sent: list[tuple[str, int]] = []
    for i in range(600):
        t = E0 + i * 20 * 1000
        if sent and rng.random() < 0.3:
            mid, fired = rng.choice(sent)
            kind = rng.choice(("click", "open"))
            item = outcome(mid, fired, t + rng.randrange(-HOUR, HOUR), kind, eid=f"o{i}")
        else:
            item = request(t + rng.randrange(0, 3 * HOUR), f"m{i}", cid=f"c{i % 17}")
            sent.append((item.message_id, item.trigger.fired_at))
        if rng.random() < 0.2:          # the watermark moves now and then, sometimes past items
            watermark = t + rng.randrange(-2 * HOUR, HOUR) if watermark is None else max(
                watermark, t + rng.randrange(-2 * HOUR, HOUR))
        state, _, change = _claimed(a, state, item, watermark)
        seen[change] += 1
    assert seen[BUFFERED] > 100 and seen[CHANGED] > 100
