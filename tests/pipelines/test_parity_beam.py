"""Parity: the same input gives byte-identical output files on the reference runner and on Beam.

Two inputs: the first rows of the shipped real data (about half an hour of real traffic, both
triggers, real duplicate rows), and generated journeys with every kind of trouble: duplicates,
malformed records, and arrival out of order by more than max_out_of_orderness, so that some
events are late, which only matches if Beam judges lateness against the same watermark as the
reference. The whole shipped file gives identical files too (about half a minute on Beam; run
`personalize replay --runner direct` on it to see).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from pipelines import beam_pipeline, reference
from runners import SHIPPED_DATA as DATA
from runners.traffic import DEFAULT_START, Traffic, TrafficConfig, jsonl_line, rees46_line
from tests.pipelines.test_parity_flink import consent_journeys
from transforms.model import BehaviourEvent
from transforms.readers import REES46_COLUMNS, read_events_jsonl, read_rees46
from transforms.settings import DAY, HOUR, Settings

pytestmark = pytest.mark.engine

REAL_ITEMS = 6000    # 4404 events (00:00-00:38 UTC) and their synthesized profiles
FILES = ("payloads.jsonl", "audit.jsonl", "dead_letters.jsonl", "features.jsonl", "summary.json")


def replay_both(items: list, tmp_path: Path) -> dict:
    """Run both runners on `items`; assert every output file is identical; the summary."""
    settings = Settings()
    ref = reference.run_replay(items, settings, tmp_path / "reference")
    beam = beam_pipeline.run_replay(items, settings, tmp_path / "beam")
    assert beam == ref
    for name in FILES:
        ours = (tmp_path / "beam" / name).read_bytes()
        assert ours == (tmp_path / "reference" / name).read_bytes(), f"{name} differs"
    return ref


def test_real_data_gives_the_same_files(tmp_path):
    if not DATA.is_file():
        pytest.fail(f"shipped data missing: {DATA} (the repo expects ../shared/data beside it)")
    items = list(itertools.islice(read_rees46(DATA), REAL_ITEMS))
    summary = replay_both(items, tmp_path)
    assert summary["dropped"] == {"duplicate": 3}           # exact duplicate rows of the data
    decisions = summary["decisions"]
    assert decisions["browse_intensity:emitted"] > 100
    assert decisions["cart_abandonment:emitted"] > 10


def test_generated_journeys_with_duplicates_malformed_and_late_items_give_the_same_files(tmp_path):
    cfg = TrafficConfig(events=1500, customers=200, rate=2.0, seed=7, duplicate_ratio=0.03,
                        out_of_order_ms=12_000, malformed_ratio=0.03)
    path = tmp_path / "journeys.jsonl"
    path.write_text("".join(jsonl_line(g) + "\n" for g in Traffic(cfg)))
    items = list(read_events_jsonl(path))
    summary = replay_both(items, tmp_path)
    # The input exercises what it is meant to.
    assert summary["dropped"]["duplicate"] > 0
    assert summary["dead_letters"]["late"] > 0
    assert summary["dead_letters"]["decode_error"] > 0
    types = {json.loads(line)["trigger"]["type"]
             for line in (tmp_path / "beam" / "payloads.jsonl").open()}
    assert types == {"cart_abandonment", "browse_intensity", "post_purchase", "win_back",
                     "welcome", "engagement_followup"}


def test_consent_changes_and_erasures_are_never_late_on_beam(tmp_path):
    summary = replay_both(consent_journeys(), tmp_path)
    assert summary["dead_letters"] == {} and summary["consent_writes"] == 7
    assert summary["decisions"]["consent_change:consent:revoked"] == 3


def bursty_days(tmp_path: Path, bursts: int = 4, every: int = 16 * HOUR, events: int = 300,
                customers: int = 120) -> list:
    """Generated REES46 rows (second resolution, 3 % duplicates) in bursts of `events` at 2/s,
    one every `every` of event time: more than two days with quiet hours between bursts."""
    rows = []
    for k in range(bursts):
        cfg = TrafficConfig(events=events, customers=customers, rate=2.0, seed=k,
                            start=DEFAULT_START + k * every, duplicate_ratio=0.03)
        rows += [line for line in map(rees46_line, Traffic(cfg)) if line is not None]
    path = tmp_path / "bursty.csv"
    path.write_text(",".join(REES46_COLUMNS) + "\n" + "".join(r + "\n" for r in rows))
    return list(read_rees46(path))


def test_bursts_over_two_days_give_the_same_files(tmp_path):
    # Between bursts the traffic is quiet for hours: a replay has no wall clock that moves
    # with it, and the first record after a gap must not look like it came from the future.
    items = bursty_days(tmp_path)
    span = max(i.occurred_at for i in items if isinstance(i, BehaviourEvent)) - DEFAULT_START
    assert span > 2 * DAY
    summary = replay_both(items, tmp_path)
    assert summary["dead_letters"] == {}
    assert summary["decisions"]["browse_intensity:emitted"] > 0
