"""`personalize preview`: every trigger type, subject variant and segment variant is rendered
by the core, none falls back, and the segment variants differ where the templates say so."""

from __future__ import annotations

from runners.cli import main
from runners.preview import build_samples
from transforms.core import Core
from transforms.render import Renderer
from transforms.segments import LIFECYCLES, TIERS
from transforms.settings import Settings


def test_every_trigger_variant_and_segment_variant_is_previewed():
    settings = Settings()
    samples = build_samples(settings)
    core = Core(settings.core)
    renderer = Renderer()
    expected = set()
    for trigger in core.triggers:
        for variant in renderer.variants(trigger.type):
            expected.add((trigger.type, variant, ""))
            expected.add((trigger.type, variant, "no_segment"))
            expected |= {(trigger.type, variant, f"{lc}_{tier}")
                         for lc in LIFECYCLES for tier in TIERS}
    assert {(s.trigger, s.variant, s.segment) for s in samples} == expected
    assert len({s.html_name for s in samples}) == len(samples)
    assert not [s.html_name for s in samples if s.payload.fallback]
    by_name = {s.stem: s.payload for s in samples}
    assert by_name["cart_abandonment_a_no_segment"].segment is None
    lapsed = by_name["cart_abandonment_a_lapsed_low"]
    assert lapsed.segment.lifecycle == "lapsed" and lapsed.subject.startswith("Welcome back!")
    assert "We have missed you." in lapsed.html
    assert "regulars" in by_name["browse_intensity_b_active_high"].text
    assert "regulars" not in by_name["browse_intensity_b_active_low"].text


def test_preview_writes_the_files_and_an_index_with_the_segment(tmp_path, capsys):
    assert main(["preview", "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text()
    assert "<th>segment</th>" in index and "lapsed, high" in index
    assert (tmp_path / "browse_intensity_a_at_risk_medium.html").is_file()
    assert (tmp_path / "browse_intensity_a_at_risk_medium.txt").is_file()
