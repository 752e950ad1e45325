"""`personalize preview`: every trigger type, subject variant and segment variant is rendered
by the core, none falls back, and the segment variants differ where the templates say so."""

from __future__ import annotations

from runners.cli import main
from runners.preview import build_samples, write_preview
from transforms.core import Core
from transforms.render import Renderer
from transforms.segments import LIFECYCLES, TIERS
from transforms.settings import Settings
from transforms.triggers import load_triggers


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


def test_every_trigger_variant_has_a_sample(tmp_path):
    settings = Settings()
    renderer = Renderer()
    types = [t.type for t in load_triggers(settings.core)]
    expected = {(t, v) for t in types for v in renderer.variants(t)}
    samples = write_preview(tmp_path, settings)
    assert {(s.trigger, s.variant) for s in samples} == expected
    assert {("price_drop", "a"), ("back_in_stock", "b")} <= expected
    assert not [s for s in samples if s.payload.fallback]
    assert (tmp_path / "price_drop_a.html").is_file()


def test_price_drop_sample_shows_the_new_and_the_old_price():
    (drop, *_) = [s for s in build_samples(Settings()) if s.trigger == "price_drop"]
    assert "$594.15" in drop.payload.text and "(was $699.00)" in drop.payload.text
    assert "$699.00)" not in drop.payload.text.split("(was")[1].split("\n", 1)[1]
