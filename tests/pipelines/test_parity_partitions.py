"""Parity over partitions: the reference runner, Beam and Flink give byte-identical payloads,
audit, dead letters and features when a replay spreads its customers over partitions
(core.replay_partitions: as Kafka's default partitioner spreads their keys), with a skewed
partition, an idle one, traffic over several days, and a hostile future-stamped event.

Lateness is judged against each record's own partition watermark (transforms/clock.py), so
a partition minutes behind the others is not late, whatever order the partitions interleave in.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines import beam_pipeline, flink_pipeline, reference
from runners.traffic import Traffic, TrafficConfig, jsonl_line
from tests.builders import T0, add, profile, view
from tests.pipelines.test_parity_beam import bursty_days
from transforms.clock import source_partition
from transforms.model import BehaviourEvent, CustomerProfile, DeadLetter, Item
from transforms.readers import read_events_jsonl
from transforms.settings import HOUR, MINUTE, SECOND, Settings

pytestmark = pytest.mark.engine

PARTITIONS = 4
FILES = ("payloads.jsonl", "audit.jsonl", "dead_letters.jsonl", "features.jsonl")


def settings(partitions: int = PARTITIONS) -> Settings:
    s = Settings()
    s.core.replay_partitions = partitions
    return s


def replay_all(items: list[Item | DeadLetter], s: Settings, tmp_path: Path) -> dict:
    """Run the three runners on `items`; assert every output file is identical (the summary:
    equal); the summary."""
    ref = reference.run_replay(items, s, tmp_path / "reference")
    runs = {"beam": beam_pipeline.run_replay(items, s, tmp_path / "beam"),
            "flink": flink_pipeline.run_replay(items, s, tmp_path / "flink")}
    for name, summary in runs.items():
        assert summary == ref, name
        for file in FILES:
            got = (tmp_path / name / file).read_bytes()
            assert got == (tmp_path / "reference" / file).read_bytes(), f"{name}: {file} differs"
    return ref


def journeys(tmp_path: Path, **kw: object) -> list[Item | DeadLetter]:
    cfg = TrafficConfig(**{"events": 1200, "customers": 120, "rate": 1.0, "seed": 3,  # type: ignore[arg-type]
                           "duplicate_ratio": 0.03, "malformed_ratio": 0.02, **kw})
    path = tmp_path / "journeys.jsonl"
    path.write_text("".join(jsonl_line(g) + "\n" for g in Traffic(cfg)))
    return list(read_events_jsonl(path))


def partition(item: Item | DeadLetter) -> object:
    assert not isinstance(item, DeadLetter)
    return source_partition(item.origin, item.customer_id, PARTITIONS)


def shifted(item: Item, by: int) -> Item:
    if isinstance(item, BehaviourEvent):
        return replace(item, occurred_at=item.occurred_at + by)
    assert isinstance(item, CustomerProfile)
    return replace(item, updated_at=item.updated_at + by)


def test_four_partitions_with_out_of_order_items_give_the_same_files(tmp_path):
    items = journeys(tmp_path, out_of_order_ms=12_000)
    summary = replay_all(items, settings(), tmp_path)
    assert {partition(i) for i in items if not isinstance(i, DeadLetter)} == set(range(4))
    assert summary["dead_letters"]["late"] > 0 and summary["dropped"]["duplicate"] > 0
    assert summary["decisions"]["browse_intensity:emitted"] > 0


def test_a_partition_minutes_behind_the_others_is_not_late(tmp_path):
    # Every record of partition 1 is stamped 3 minutes earlier: its clients' clocks lag.
    items = [i if isinstance(i, DeadLetter) or partition(i) != 1 else shifted(i, -3 * MINUTE)
             for i in journeys(tmp_path)]
    summary = replay_all(items, settings(), tmp_path)
    assert "late" not in summary["dead_letters"]
    skewed = {i.customer_id for i in items if not isinstance(i, DeadLetter) and partition(i) == 1}
    fired = [line for line in (tmp_path / "reference" / "payloads.jsonl").open()
             if any(f'"customer_id":"{c}"' in line for c in skewed)]
    assert fired


def test_a_partition_that_goes_quiet_holds_the_timers_but_changes_no_output(tmp_path):
    items = journeys(tmp_path)
    quiet_from = len(items) // 4
    items = [i for n, i in enumerate(items)
             if n < quiet_from or isinstance(i, DeadLetter) or partition(i) != 2]
    summary = replay_all(items, settings(), tmp_path)
    assert summary["decisions"]["cart_abandonment:emitted"] > 0


def test_bursts_over_two_days_on_four_partitions_give_the_same_files(tmp_path):
    summary = replay_all(bursty_days(tmp_path), settings(), tmp_path)
    assert summary["dead_letters"] == {}
    assert summary["decisions"]["browse_intensity:emitted"] > 0


def test_one_event_stamped_minutes_ahead_makes_no_other_customer_late(tmp_path):
    # Issue 16: live traffic (stamped by the wall clock, 2 min ahead: skewed clients inside
    # max_future), and one event 290 s ahead of the wall clock. It moves its partition's clock
    # only up to the wall clock, so the other customers' events that follow are on time. (The
    # runs must start within 130 s, or the wall clock itself passes the normal events.)
    base = time.time_ns() // 1_000_000 + 2 * MINUTE
    items: list[Item | DeadLetter] = []
    customers = [f"live-{n}" for n in range(12)]
    items += [profile(base - MINUTE, cid=c, email=f"{c}@example.com") for c in customers]
    items.append(add(base + 290 * SECOND - 2 * MINUTE, "p-skew", cid="live-skewed"))
    for k in range(5):
        items += [view(base + k * SECOND + n * 10, f"p{k}", "shoes", cid=c)
                  for n, c in enumerate(customers)]
    summary = replay_all(items, settings(1), tmp_path)
    assert summary["dead_letters"] == {}
    assert summary["decisions"]["browse_intensity:emitted"] == len(customers)


def profile_ahead(tag: str = "") -> list[Item | DeadLetter]:
    """One partition: customer a's views of hats, and customer b's CRM update stamped a minute
    ahead of the stream, read before a's view at T0 + MINUTE - OOO - 1 (behind that update by
    more than the out-of-orderness). Kafka keeps profiles in a topic of their own, so the
    update moves no watermark of the events: that view is on time, the fifth view fires browse
    at FIRE. One view exactly at the events' own watermark is still late."""
    a, b = f"{tag}a", f"{tag}b"
    ooo = Settings().core.max_out_of_orderness
    items: list[Item | DeadLetter] = [profile(T0 - HOUR, cid=c, email=f"{c}@example.com")
                                      for c in (a, b)]
    items += [view(T0 + k * SECOND, f"p{k}", "hats", cid=a) for k in range(3)]
    items.append(profile(T0 + MINUTE, cid=b, email=f"{b}@example.com"))
    items.append(view(T0 + 2 * SECOND - ooo - 1, "p-late", "socks", cid=a))  # its watermark
    items.append(view(T0 + MINUTE - ooo - 1, "p3", "hats", cid=a))
    items.append(view(PROFILE_AHEAD_FIRE, "p4", "hats", cid=a))
    return items


PROFILE_AHEAD_FIRE = T0 + MINUTE + SECOND


def test_a_profile_stamped_ahead_of_the_stream_makes_no_event_late(tmp_path):
    # The 2026-12-06 cluster defect (1 partition): the reference judged events against a
    # partition watermark the profiles had moved, the Kafka job (profiles topic) not.
    summary = replay_all(profile_ahead(), settings(1), tmp_path)
    assert summary["dead_letters"] == {"late": 1}
    assert summary["decisions"]["browse_intensity:emitted"] == 1
    (line,) = (tmp_path / "reference" / "payloads.jsonl").read_text().splitlines()
    assert json.loads(line)["trigger"]["fired_at"] == PROFILE_AHEAD_FIRE
