"""The benchmark harness at a tiny size: files and fields, never timings."""

from __future__ import annotations

import json
from pathlib import Path

from runners.bench import Row, Sizes, Target
from runners.cli import main

ROW_FIELDS = {
    "scenario",
    "metric",
    "value",
    "unit",
    "baseline",
    "baseline_label",
    "ratio",
    "target",
    "passed",
    "note",
}


def test_core_and_decode_write_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = main(["bench", "--only", "decode,core", "--scale", "0.01", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "bench.json").read_text())

    assert list(report["scenarios"]) == ["core", "decode"]  # canonical order, not --only's
    for scenario in report["scenarios"].values():
        assert scenario["status"] == "ok", scenario["error"]
        assert scenario["peak_rss_kb"] > 0
        assert len(scenario["load_average_start"]) == 3
    assert report["command"].startswith("personalize bench --only decode,core")
    assert report["host"]["cpus"] >= 1 and "load_average_end" in report["host"]
    for row in report["rows"]:
        assert set(row) == ROW_FIELDS

    core = [r for r in report["rows"] if r["scenario"] == "core"]
    for label in ("shipped rees46 data", "generated traffic"):
        rate = next(r for r in core if r["metric"].startswith(f"keyed core records/s, {label}"))
        assert rate["value"] > 0 and rate["baseline"] > 0 and rate["ratio"] > 0
        assert rate["baseline_label"].startswith("decode-only")
        assert rate["target"] and rate["passed"] in (True, False)
        whole = next(
            r for r in core if r["metric"].startswith("whole core") and label in r["metric"]
        )
        assert 0 < whole["value"] <= rate["value"]  # both stages take longer than one
        assert any(
            r["metric"].startswith("compose stage payloads/s") and label in r["metric"]
            for r in core
        )
    bound = next(r for r in core if r["metric"].startswith("bound: the same rules inlined"))
    assert bound["value"] > 0 and bound["baseline_label"] == "keyed core, same rounds"
    details = report["scenarios"]["core"]["details"]
    assert details["bound"]["same_outputs"] > 0
    best = details["shipped rees46 data"]["best"]
    assert best["compose_calls"] == best["outputs"].get("payload", 0)
    decode = next(
        r
        for r in report["rows"]
        if r["scenario"] == "decode" and r["metric"].startswith("decode_event")
    )
    assert decode["value"] > 0 and decode["baseline"] > 0
    assert any(r["metric"] == "peak RSS of the benchmark process" for r in report["rows"])

    md = (out / "bench.md").read_text()
    assert "| scenario | metric | value | baseline | ratio | target | result |" in md
    assert "personalize bench --only decode,core" in md and "load average" in md
    assert "| core |" in md and "| decode |" in md


def test_a_failing_scenario_is_reported_and_the_exit_code_says_so(tmp_path: Path) -> None:
    code = main(["bench", "--only", "core", "--timeout", "0.5", "--out", str(tmp_path)])
    assert code == 1
    report = json.loads((tmp_path / "bench.json").read_text())
    core = report["scenarios"]["core"]
    assert core["status"] == "error" and "timed out" in core["error"]
    assert "ERROR" in (tmp_path / "bench.md").read_text()


def test_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["bench", "--only", "core,nope", "--out", str(tmp_path)]) == 2


def test_row_ratio_and_target() -> None:
    row = Row("x", "rate", 50.0, "/s", baseline=200.0, target=Target("ratio", ">=", 0.5, ">= .5"))
    assert row.ratio == 0.25 and row.passed is False
    assert Row("x", "rate", None, "/s", target=Target("value", ">=", 1, ">= 1")).passed is None


def test_quick_sizes_are_smaller_and_scale_shrinks_them() -> None:
    full, quick = Sizes.pick(quick=False), Sizes.pick(quick=True)
    assert quick.core_traffic_events < full.core_traffic_events
    assert quick.state_replicate_to is None and full.state_replicate_to == 1_000_000
    assert quick.state_customers == (10_000, 100_000)
    tiny = Sizes.pick(quick=True, scale=0.001)
    assert tiny.core_real_items is not None and tiny.state_customers == (10, 100)
