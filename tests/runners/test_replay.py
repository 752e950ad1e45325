from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runners import SHIPPED_DATA as SHARED_DATA
from runners import replay
from runners.cli import main
from runners.progress import Pacer
from transforms.model import BehaviourEvent, CustomerProfile


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A stand-in pipelines module: records what run_replay was given."""
    import types

    calls: list[Any] = []
    module = types.ModuleType("fake_pipeline")

    def run_replay(items: Any, settings: Any, out_dir: Path) -> dict[str, Any]:
        calls.append((list(items), out_dir))
        return {"items": len(calls[-1][0])}

    module.run_replay = run_replay  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "fake_pipeline", module)
    monkeypatch.setitem(replay.RUNNERS, "flink-cluster", "fake_pipeline")
    return calls


def test_replay_hands_items_to_the_runner_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_runner: list[Any]
) -> None:
    code = main(["replay", "--input", str(SHARED_DATA), "--format", "rees46", "--limit", "50",
                 "--runner", "flink-cluster", "--out", str(tmp_path / "out")])
    assert code == 0
    items, out_dir = fake_runner[0]
    assert len(items) == 50 and out_dir == tmp_path / "out" and out_dir.is_dir()
    assert isinstance(items[0], CustomerProfile) and isinstance(items[1], BehaviourEvent)
    assert json.loads(capsys.readouterr().out)["items"] == 50


def test_replay_without_profile_synthesis(tmp_path: Path, fake_runner: list[Any]) -> None:
    main(["replay", "--input", str(SHARED_DATA), "--format", "rees46", "--limit", "20",
          "--no-synthesize-profiles", "--runner", "flink-cluster", "--out", str(tmp_path)])
    assert all(isinstance(i, BehaviourEvent) for i in fake_runner[0][0])


def test_a_runner_module_that_does_not_exist_yet_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(replay.RUNNERS, "direct", "pipelines.not_written_yet")
    code = main(["replay", "--input", str(SHARED_DATA), "--format", "rees46",
                 "--runner", "direct", "--out", str(tmp_path)])
    assert code == 2
    assert "pipelines.not_written_yet" in capsys.readouterr().err


def test_replay_through_the_reference_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", "--input", str(SHARED_DATA), "--format", "rees46", "--limit", "2000",
                 "--runner", "reference", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert isinstance(summary, dict) and summary
    assert any(tmp_path.iterdir())


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--input", str(SHARED_DATA), "--format", "rees46",
                 "--runner", "reference"]) == 2
    assert main(["replay", "--input", str(tmp_path / "nope.csv"), "--format", "rees46",
                 "--runner", "reference", "--out", str(tmp_path)]) == 2


def test_pacing_follows_event_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    slept: list[float] = []
    monkeypatch.setattr("runners.progress.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("runners.progress.time.sleep", slept.append)
    pacer = Pacer(speed=10.0)
    pacer.wait(1_000_000)
    pacer.wait(1_010_000)  # 10 s of event time at 10x: due 1 s after the first
    clock[0] = 100.5
    pacer.wait(1_005_000)  # due at 100.5: no wait
    assert slept == [1.0]


def test_replay_of_generated_traffic_writes_outcomes_and_holds_out_a_few_percent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    assert main(["generate", "--events", "30000", "--customers", "3000", "--seed", "11",
                 "--to", "file", "--format", "jsonl", "--out", str(events)]) == 0
    out = tmp_path / "out"
    assert main(["replay", "--input", str(events), "--format", "events-jsonl",
                 "--runner", "reference", "--out", str(out)]) == 0
    capsys.readouterr()
    decisions = json.loads((out / "summary.json").read_text())["decisions"]
    held = sum(n for d, n in decisions.items() if d.endswith(":suppressed:holdout"))
    sent = sum(n for d, n in decisions.items() if d.endswith(":emitted"))
    assert sent > 800 and 0.03 <= held / (held + sent) <= 0.08
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").open()]
    keys = {"message_id", "customer_id", "trigger_type", "variant", "kind", "value",
            "occurred_at", "fired_at", "holdout", "event_id"}
    assert outcomes and all(set(o) == keys for o in outcomes)
    assert {o["kind"] for o in outcomes} <= {"open", "click", "purchase"}
    assert all(o["variant"] is None for o in outcomes if o["holdout"])
    audit = [json.loads(line) for line in (out / "audit.jsonl").open()]
    held_ids = {a["message_id"] for a in audit if a["decision"] == "suppressed:holdout"}
    assert {o["message_id"] for o in outcomes if o["holdout"]} <= held_ids
