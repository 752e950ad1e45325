"""`personalize preview` shows every trigger type's subject variants, rendered (no fallback)."""

from runners.preview import build_samples
from transforms.core import Core
from transforms.render import Renderer
from transforms.settings import Settings


def test_every_trigger_and_variant_has_a_rendered_sample():
    settings = Settings()
    samples = build_samples(settings)
    renderer = Renderer()
    wanted = {(t.type, v) for t in Core(settings.core).triggers for v in renderer.variants(t.type)}
    got = {(s.trigger, s.variant) for s in samples}
    assert got == wanted
    assert {t for t, _ in got} >= {
        "cart_abandonment", "browse_intensity", "post_purchase", "win_back", "welcome",
        "engagement_followup",
    }
    assert all(not s.payload.fallback for s in samples), [
        (s.trigger, s.payload.fallback_reason) for s in samples if s.payload.fallback
    ]
