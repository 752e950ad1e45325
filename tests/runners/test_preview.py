"""`personalize preview` renders every registered trigger and subject variant, price drop and
back in stock through the product stage, none as a fallback."""

from __future__ import annotations

from runners.preview import build_samples, write_preview
from transforms.render import Renderer
from transforms.settings import Settings
from transforms.triggers import load_triggers


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
