"""The reference runner on the shipped real data, with hand-checked cases."""

import json
from collections import Counter

import pytest

from pipelines.reference import FIRE_EVERY, ReferenceRunner, run_replay
from runners import SHIPPED_DATA as DATA
from runners.traffic import Traffic, TrafficConfig
from tests.builders import CART_DELAY, HOUR, MINUTE, SECOND, T0, add, profile, view
from transforms.core import Core
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    DROPPED,
    PAYLOAD,
    BehaviourEvent,
    CustomerProfile,
    event_time,
)
from transforms.readers import read_rees46
from transforms.settings import Settings


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    if not DATA.is_file():
        pytest.fail(f"shipped data missing: {DATA} (the repo expects ../shared/data beside it)")
    out = tmp_path_factory.mktemp("ref")
    summary = run_replay(read_rees46(DATA), Settings(), out)
    audit = [json.loads(line) for line in (out / "audit.jsonl").open()]
    payloads = [json.loads(line) for line in (out / "payloads.jsonl").open()]
    return summary, audit, payloads


def test_replay_counts_and_no_state_left(replay):
    summary, audit, payloads = replay
    assert summary["input_events"] == 17434
    assert summary["dropped"] == {"duplicate": 5}  # exact duplicate rows of the dataset
    assert summary["active_customers_at_end"] == 0  # every deadline fired, all state expired
    assert (
        len(payloads) == summary["payloads"] == sum(1 for a in audit if a["decision"] == "emitted")
    )


def decisions_of(audit, customer, trigger):
    return [
        (a["fired_at"], a["key"], a["decision"])
        for a in audit
        if a["customer_id"] == customer and a["type"] == trigger
    ]


def test_hand_checked_cart_abandonment_fires_in_the_end_of_input_flush(replay):
    # User 512805899 (rows 5603, 5699): views product 15300183 at 02:29:24 UTC, carts it at
    # 02:29:37 and does nothing else before the data stops at 02:50. The deadline 03:29:37 is
    # after the end of the data: the end-of-input flush fires it at exactly that time.
    _, audit, payloads = replay
    ((fired_at, key, decision),) = decisions_of(audit, "512805899", "cart_abandonment")
    assert (fired_at, decision) == (1569900577000, "emitted")  # 2019-10-01 03:29:37 UTC
    (p,) = [p for p in payloads if p["customer_id"] == "512805899"]
    trigger = {k: p["trigger"][k] for k in ("type", "key", "fired_at", "evidence")}
    assert trigger == {
        "type": "cart_abandonment",
        "key": key,
        "fired_at": fired_at,
        "evidence": ["15300183"],
    }
    # 03:29 UTC is within quiet hours for a UTC customer: held until 08:00 UTC, valid a day.
    assert p["send_after"] == 1569916800000  # 2019-10-01 08:00 UTC
    assert p["expires_at"] == p["send_after"] + 24 * 3600 * 1000


def test_hand_checked_purchase_cancels_the_cart(replay):
    # User 524325294 (rows 524-657): carts 1002524 at 00:09:33 and buys it at 00:10:08.
    _, audit, _ = replay
    assert decisions_of(audit, "524325294", "cart_abandonment") == []


def test_hand_checked_browse_intensity(replay):
    # User 400972610 (rows 2776-3140): five views in category 2053013553165631753 between
    # 02:23:02 and 02:24:02 UTC (products 7202317, 7203226, 7203227, 7203226, 7202317), no cart:
    # fires at the fifth view, 02:24:02, keyed by the category.
    _, audit, payloads = replay
    assert decisions_of(audit, "400972610", "browse_intensity") == [
        (1569896642000, "2053013553165631753", "emitted")
    ]
    (p,) = [p for p in payloads if p["customer_id"] == "400972610"]
    assert p["trigger"]["evidence"] == ["7202317", "7203226", "7203227"]


def test_hand_checked_frequency_cap_one_browse_per_day(replay):
    # User 513171422: a smartphone burst fires at 02:35:02 (emitted); a kitchen-table burst
    # fires 8 min 42 s later: one browse-intensity payload per 24 h, so it is suppressed.
    _, audit, _ = replay
    assert decisions_of(audit, "513171422", "browse_intensity") == [
        (1569897302000, "electronics.smartphone", "emitted"),
        (1569897824000, "furniture.kitchen.table", "suppressed:frequency_cap"),
    ]


def test_end_of_input_fires_pending_deadlines_at_their_own_time():
    out = []
    runner = ReferenceRunner(Core(), out.append)
    for item in [profile(), add(T0, "p1"), view(T0 + 5 * MINUTE, "p2")]:
        runner.feed(item)
    assert not [o for o in out if o[0] == PAYLOAD]
    runner.finish()
    (payload,) = [p for k, p in out if k == PAYLOAD]
    assert payload.trigger.fired_at == T0 + CART_DELAY
    assert [a.decision for k, a in out if k == AUDIT] == ["emitted"]
    assert runner.states == {}


def test_how_often_timers_fire_changes_no_output():
    # Duplicates, and events up to 15 s out of order (some behind the 10 s bound: late), from
    # 300 customers; timers fired after every item, every 7 items and in the default rounds.
    cfg = TrafficConfig(
        events=6000,
        customers=300,
        rate=20.0,
        seed=5,
        duplicate_ratio=0.02,
        out_of_order_ms=15_000,
    )
    items = [i for i in Traffic(cfg) if isinstance(i, BehaviourEvent | CustomerProfile)]
    clock = max(event_time(i) for i in items)
    runs = []
    for every in (1, 7, FIRE_EVERY):
        out = []
        runner = ReferenceRunner(Core(), out.append, clock=lambda: clock, fire_every=every)
        for item in items:
            runner.feed(item)
        runner.finish()
        assert runner.states == {}
        runs.append(Counter(f"{kind} {record!r}" for kind, record in out))
    kinds = Counter(line.split(" ", 1)[0] for line in runs[0].elements())
    assert kinds[PAYLOAD] > 50 and kinds[DEAD_LETTER] > 10 and kinds[DROPPED] > 10
    assert runs[0] == runs[1] == runs[2]


def test_a_late_profile_meets_its_customer_as_if_timers_fired_after_every_item():
    # Five views fire browse intensity at T0 + 4 s under Ada's profile. A profile renaming her
    # arrives late (updated_at T0 + 5 s, behind the watermark after a view at T0 + 20 s): the
    # trigger was decided under Ada whether or not the runner's round of timers came yet.
    items = [profile(T0 - HOUR, name="Ada")] + [
        view(T0 + i * SECOND, pid=f"p{i}") for i in range(5)
    ]
    items += [
        view(T0 + 20 * SECOND, pid="p9", category="hats"),
        profile(T0 + 5 * SECOND, name="Grace"),
    ]
    for every in (1, FIRE_EVERY):
        out = []
        runner = ReferenceRunner(Core(), out.append, fire_every=every)
        for item in items:
            runner.feed(item)
        assert runner.states["c1"].profile.first_name == "Grace"
        runner.finish()
        assert [p.recipient_name for k, p in out if k == PAYLOAD] == ["Ada"]


def test_a_hot_customer_in_a_replay_is_capped_counted_and_loses_nothing(tmp_path):
    # 20 000 views of one customer in 22 hours, in time order: more ids than max_dedup_ids and,
    # between two rounds of timers, more pending items than max_pending. Evicted and processed
    # early, counted; the decisions are those of a run with no caps.
    items = [profile(T0 - HOUR)]
    items += [view(T0 + i * 4 * SECOND, f"p{i % 100}", f"c{i % 7}") for i in range(20_000)]
    capped = run_replay(items, Settings(), tmp_path / "capped")
    uncapped = Settings().with_overrides(["core.max_dedup_ids=1000000", "core.max_pending=1000000"])
    summary = run_replay(items, uncapped, tmp_path / "uncapped")
    assert capped["dropped"]["evicted:dedup"] >= 20_000 - Settings().core.max_dedup_ids
    assert capped["dropped"]["evicted:pending"] > 0
    assert {"evicted:dedup", "evicted:pending"}.isdisjoint(summary["dropped"])
    assert capped["dead_letters"] == {}
    assert capped["active_customers_at_end"] == 0
    for name in ("audit.jsonl", "payloads.jsonl"):
        assert (tmp_path / "capped" / name).read_bytes() == (
            tmp_path / "uncapped" / name
        ).read_bytes()
