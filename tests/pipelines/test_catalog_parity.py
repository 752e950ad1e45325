"""Price drop and back in stock end to end: generated traffic with catalog changes (drops,
rises, stock outs, restocks, hostile changes) through the reference runner, and the same
files on Beam (and on Flink: tests/pipelines/test_parity_flink.py's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import reference
from runners.catalog_traffic import CatalogTrafficConfig, with_catalog_changes
from runners.traffic import Traffic, TrafficConfig, jsonl_line
from transforms.catalog_changes import CatalogChange
from transforms.jsonl import dumps, item_to_json
from transforms.readers import read_events_jsonl
from transforms.settings import Settings

FILES = ("payloads.jsonl", "audit.jsonl", "dead_letters.jsonl", "features.jsonl", "summary.json")


def catalog_items(tmp_path: Path, events: int = 1200, out_of_order_ms: int = 0) -> list:
    """Generated journeys with catalog changes, written to and read back from a replay file."""
    cfg = TrafficConfig(events=events, customers=60, rate=0.05, seed=11, duplicate_ratio=0.02,
                        out_of_order_ms=out_of_order_ms, malformed_ratio=0.02)
    items = with_catalog_changes(Traffic(cfg), CatalogTrafficConfig(every=6, recent=20, seed=3,
                                                                     hostile_ratio=0.05))
    path = tmp_path / "journeys.jsonl"
    path.write_text("".join(
        (dumps(item_to_json(i)) if isinstance(i, CatalogChange) else jsonl_line(i)) + "\n"
        for i in items))
    return list(read_events_jsonl(path))


def test_reference_fires_both_triggers_and_dead_letters_hostile_changes(tmp_path):
    items = catalog_items(tmp_path)
    summary = reference.run_replay(items, Settings(), tmp_path / "ref")
    decisions = summary["decisions"]
    assert summary.get("input_catalog_changes", 0) > 50
    assert decisions.get("price_drop:emitted", 0) > 0, decisions
    assert decisions.get("back_in_stock:emitted", 0) > 0, decisions
    assert summary["dead_letters"].get("invalid_value", 0) > 0
    payloads = [json.loads(line) for line in
                (tmp_path / "ref" / "payloads.jsonl").read_text().splitlines()]
    drops = [p for p in payloads if p["trigger"]["type"] == "price_drop"]
    assert drops and all(not p["fallback"] for p in drops)
    assert all("(was " in p["text"] for p in drops)


@pytest.mark.engine
def test_beam_gives_the_same_files(tmp_path):
    from pipelines import beam_pipeline

    items = catalog_items(tmp_path, events=900, out_of_order_ms=12_000)
    settings = Settings()
    ref = reference.run_replay(items, settings, tmp_path / "reference")
    beam = beam_pipeline.run_replay(items, settings, tmp_path / "beam")
    assert beam == ref
    for name in FILES:
        ours = (tmp_path / "beam" / name).read_bytes()
        assert ours == (tmp_path / "reference" / name).read_bytes(), f"{name} differs"
    assert ref["decisions"].get("price_drop:emitted", 0) > 0


@pytest.mark.engine
def test_flink_gives_the_same_files(tmp_path):
    from pipelines import flink_pipeline

    items = catalog_items(tmp_path, events=700, out_of_order_ms=12_000)
    settings = Settings()
    ref = reference.run_replay(items, settings, tmp_path / "reference")
    flink = flink_pipeline.run_replay(items, settings, tmp_path / "flink")
    assert flink == ref
    for name in FILES[:-1]:  # its summary.json is written before active_customers_at_end
        ours = (tmp_path / "flink" / name).read_bytes()
        assert ours == (tmp_path / "reference" / name).read_bytes(), f"{name} differs"
    assert ref["decisions"].get("price_drop:emitted", 0) > 0
    assert ref["decisions"].get("back_in_stock:emitted", 0) > 0


@pytest.mark.engine
def test_interest_folded_in_every_few_items_gives_the_same_files_on_every_engine(tmp_path):
    # Folding interest in after 2 buffered items and keeping 3 interested customers: each
    # engine wakes products at its own times (Beam's shards, Flink's watermarks), and the
    # outputs may not depend on it (transforms/product_stage.py).
    from pipelines import beam_pipeline, flink_pipeline

    items = catalog_items(tmp_path, events=700, out_of_order_ms=12_000)
    settings = Settings().with_overrides(["core.interest_fold=2", "core.max_interested=3"])
    ref = reference.run_replay(items, settings, tmp_path / "reference")
    assert ref["decisions"].get("price_drop:emitted", 0) > 0
    for name, run in (("beam", beam_pipeline.run_replay), ("flink", flink_pipeline.run_replay)):
        summary = run(items, settings, tmp_path / name)
        assert summary == ref, name
        for file in FILES[:-1]:
            ours = (tmp_path / name / file).read_bytes()
            assert ours == (tmp_path / "reference" / file).read_bytes(), f"{name}: {file} differs"
