"""Parity with segments: a model with RFM edges and k-means centroids, and triggers limited to
segments, give byte-identical payloads (each with its segment), audit (with
`suppressed:segment`), dead letters and feature snapshots (with the segment fields) on the
reference runner, Beam and Flink."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines import beam_pipeline, flink_pipeline, reference
from runners import SHIPPED_DATA as DATA
from runners.train import fit_customer_segments
from transforms.model import BehaviourEvent
from transforms.readers import read_rees46
from transforms.recommend import train
from transforms.settings import Settings

pytestmark = pytest.mark.engine

ITEMS = 3000  # about 15 minutes of the shipped data with their synthesized profiles
COMPARED = ("payloads", "audit", "dead_letters", "features")
LIMITS = "browse_intensity=lifecycle:active;cart_abandonment=cluster:0"


@pytest.fixture(scope="module")
def items() -> list:
    if not DATA.is_file():
        pytest.fail(f"shipped data missing: {DATA} (the repo expects ../shared/data beside it)")
    return list(itertools.islice(read_rees46(DATA), ITEMS))


@pytest.fixture(scope="module")
def settings(items: list, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with a model trained on the input (3 clusters) and the segment limits."""
    events = [e for e in items if isinstance(e, BehaviourEvent)]
    model = train(events)
    fit = fit_customer_segments(events, Settings(), model.trained_until, clusters=3)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    replace(model, segments=fit.model).save(path)
    return Settings().with_overrides([f"paths.model={path}", f"core.trigger_segments={LIMITS}"])


@pytest.fixture(scope="module")
def want(items: list, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    summary = reference.run_replay(items, settings, out)
    decisions = summary["decisions"]
    assert decisions["browse_intensity:suppressed:segment"] > 10
    assert decisions["browse_intensity:emitted"] > 5
    assert decisions["cart_abandonment:emitted"] > 0
    payloads = [json.loads(line) for line in (out / "payloads.jsonl").open()]
    assert all(p["segment"]["cluster"] in (0, 1, 2) for p in payloads)
    assert {p["segment"]["lifecycle"] for p in payloads
            if p["trigger"]["type"] == "browse_intensity"} == {"active"}
    snapshots = [json.loads(line) for line in (out / "features.jsonl").open()]
    assert {s["features"]["cluster"] for s in snapshots} == {0, 1, 2}
    return out


def _files(out: Path) -> dict[str, str]:
    return {name: (out / f"{name}.jsonl").read_text() for name in COMPARED}


def test_segments_give_the_same_files_on_beam(items, settings, want, tmp_path):
    beam_pipeline.run_replay(items, settings, tmp_path)
    assert _files(tmp_path) == _files(want)


def test_segments_give_the_same_files_on_flink(items, settings, want, tmp_path):
    flink_pipeline.run_replay(items, settings, tmp_path)
    assert _files(tmp_path) == _files(want)
