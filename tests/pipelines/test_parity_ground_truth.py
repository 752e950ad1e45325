"""Parity: traffic with ground-truth answers (runners/ground_truth.py), its loop closed on the
reference runner, gives byte-identical output files on Beam, so a scored file means the same on
every runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import beam_pipeline, reference
from runners.ground_truth import Arm, GroundTruth, close_loop, read_sends
from runners.traffic import Traffic, TrafficConfig, jsonl_line
from tests.pipelines.test_parity_beam import FILES
from transforms.readers import read_events_jsonl
from transforms.settings import Settings

pytestmark = pytest.mark.engine

LIKELY = Arm(open=0.8, click=0.5, purchase=0.5)  # most sends answered: many answer events


def test_traffic_with_its_answers_gives_the_same_files_on_beam(tmp_path: Path) -> None:
    cfg = TrafficConfig(events=1200, customers=90, rate=0.3, seed=11, out_of_order_ms=8_000)
    base = list(Traffic(cfg))
    truth = GroundTruth({t: {"a": LIKELY, "b": LIKELY}
                         for t in ("cart_abandonment", "browse_intensity")}, {})
    settings = Settings()
    loop = close_loop(base, truth, settings, tmp_path / "loop")
    assert loop.converged and len(loop.answers) > 20
    path = tmp_path / "traffic.jsonl"
    path.write_text("".join(jsonl_line(i) + "\n" for i in loop.items(base)))
    ref = reference.run_replay(read_events_jsonl(path, False, settings.core), settings,
                               tmp_path / "reference")
    beam = beam_pipeline.run_replay(list(read_events_jsonl(path, False, settings.core)),
                                    settings, tmp_path / "beam")
    assert beam == ref
    names = [*FILES, *(["outcomes.jsonl"] if (tmp_path / "reference/outcomes.jsonl").exists()
                       else [])]
    for name in names:
        ours = (tmp_path / "beam" / name).read_bytes()
        assert ours == (tmp_path / "reference" / name).read_bytes(), f"{name} differs"
    assert read_sends(tmp_path / "beam") == loop.sends
