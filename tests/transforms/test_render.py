import json
import re
import shutil
from pathlib import Path

import pytest

from tests.builders import T0
from transforms.catalog import CatalogItem
from transforms.model import CustomerProfile, FiredTrigger, Recommendation
from transforms.render import Renderer, choose_variant, default_templates_dir
from transforms.segments import Segment

TEMPLATES = default_templates_dir()
HOSTILE_NAME = "{{ 7*7 }}<script>alert(1)</script>"

CART = FiredTrigger("cart_abandonment", "cart-1", T0, ["p1", "p2"], ["e1", "e2"])
BROWSE = FiredTrigger("browse_intensity", "computers.notebook", T0, ["p1"], ["e3"],
                      category="computers.notebook")
ITEMS = [
    CatalogItem("p1", "Lenovo notebook", "computers.notebook", "lenovo", 251.74,
                "https://shop.example.invalid/p/p1", "https://shop.example.invalid/img/p1.jpg"),
    CatalogItem("p2", None, "appliances.environment.water_heater", "aqua", 33.2),
]
RECS = [Recommendation("p3", 0.5, "Samsung smartphone", "electronics.smartphone", "samsung",
                       199.0, "https://shop.example.invalid/p/p3")]


def profile(name: str | None = "Ada") -> CustomerProfile:
    return CustomerProfile("c1", T0, email="ada@example.com", first_name=name, locale="en-GB")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A private copy of the real templates, to break."""
    return Path(shutil.copytree(TEMPLATES, tmp_path / "templates"))


def test_every_trigger_has_two_subject_variants(renderer):
    assert renderer.variants("cart_abandonment") == ("a", "b")
    assert renderer.variants("browse_intensity") == ("a", "b")
    assert renderer.variants("no_such_trigger") == ()
    assert renderer.variants("../templates") == ()


@pytest.mark.parametrize("trigger", [CART, BROWSE], ids=lambda t: t.type)
@pytest.mark.parametrize("variant", ["a", "b"])
def test_renders_every_trigger_and_variant_as_email_safe_html_and_text(renderer, trigger, variant):
    items = ITEMS[: len(trigger.evidence)]
    out = renderer.render(trigger, profile(), items, RECS, variant)
    assert (out.fallback, out.fallback_reason) == (False, None)
    assert out.subject and "\n" not in out.subject and out.preheader
    html = out.html.lower()
    assert "<table" in html and 'style="' in html
    assert "<style" not in html and "<script" not in html and "<link" not in html
    for text in ("Lenovo notebook", "$251.74", "Samsung smartphone", "Ada"):
        assert text in out.html and text in out.text
    assert "None" not in out.text and "None" not in out.html
    assert out.text.endswith("\n") and "\n\n\n" not in out.text


def test_cart_email_lists_the_cart_with_prices_then_recommendations(renderer):
    out = renderer.render(CART, profile(), ITEMS, RECS, "b")
    assert out.subject == "Still thinking about Lenovo notebook and 1 more?"
    text = out.text
    assert text.index("Lenovo notebook ($251.74)") < text.index("Aqua water heater ($33.20)")
    assert text.index("Aqua water heater") < text.index("You might also like")
    assert text.index("You might also like") < text.index("Samsung smartphone ($199.00)")
    # A product without a URL links to its page on the shop.
    assert "https://shop.example.invalid/p/p2" in out.html


def test_browse_email_names_the_category(renderer):
    out = renderer.render(BROWSE, profile(), ITEMS[:1], RECS, "a")
    assert out.subject == "Ada, still looking for notebook?"


def test_no_profile_and_no_recommendations_still_render(renderer):
    out = renderer.render(CART, None, ITEMS, [], "a")
    assert not out.fallback
    assert out.subject == "You left something in your cart"
    assert out.text.startswith("Hi there,")
    assert "You might also like" not in out.text


def test_a_hostile_first_name_is_data_never_markup_nor_template(renderer):
    out = renderer.render(CART, profile(HOSTILE_NAME), ITEMS, RECS, "a")
    assert not out.fallback
    assert out.subject == f"{HOSTILE_NAME}, you left something in your cart"
    assert f"Hi {HOSTILE_NAME}," in out.text
    assert "{{ 7*7 }}&lt;script&gt;alert(1)&lt;/script&gt;" in out.html
    assert "<script" not in out.html.lower() and "49" not in out.subject


def test_line_breaks_in_customer_data_cannot_inject_headers(renderer):
    out = renderer.render(CART, profile("Ada\r\nBcc: victim@example.com\u2028\x00"), ITEMS, [], "a")
    assert "\r" not in out.subject and "\n" not in out.subject and "\x00" not in out.subject
    assert out.subject == "Ada Bcc: victim@example.com, you left something in your cart"
    assert "\n" not in out.preheader


def test_bidi_overrides_are_removed_and_emoji_kept(renderer):
    out = renderer.render(CART, profile("Ada\u202e\u200fmoc.live \U0001f469\u200d\U0001f4bb"),
                          ITEMS, [], "a")
    assert out.subject.startswith("Ada moc.live \U0001f469\u200d\U0001f4bb, you left")


def test_a_malformed_trigger_still_gets_content_not_an_exception(renderer):
    odd = FiredTrigger(["not", "a", "type"], "k", T0, ["p1"])  # type: ignore[arg-type]
    numeric_name = CustomerProfile("c1", T0, first_name=42)  # type: ignore[arg-type]
    out = renderer.render(odd, numeric_name, ITEMS[:1], [], "a")
    assert out.fallback and out.subject and out.text


def test_hostile_catalog_data_is_escaped_and_unsafe_links_dropped(renderer):
    evil = CatalogItem("p1", '<img src=x onerror="alert(1)">', "c", "b", 1.0,
                       "javascript:alert(1)", "data:text/html,<script>alert(1)</script>")
    out = renderer.render(BROWSE, profile(), [evil], [], "a")
    assert not out.fallback
    assert "<img src=x" not in out.html and "&lt;img src=x" in out.html
    assert "javascript:" not in out.html and "data:text" not in out.html


def test_a_product_missing_from_the_catalog_gives_the_static_fallback(renderer):
    out = renderer.render(CART, profile(), [ITEMS[0], None], RECS, "a")
    fallback = json.loads((TEMPLATES / "cart_abandonment" / "fallback.json").read_text())
    assert out.fallback and "product not in catalog: p2" in out.fallback_reason
    assert (out.subject, out.preheader, out.html, out.text) == (
        fallback["subject"], fallback["preheader"], fallback["html"], fallback["text"])


def test_unknown_variant_and_unknown_trigger_fall_back(renderer):
    out = renderer.render(CART, profile(), ITEMS, RECS, "zzz")
    assert out.fallback and "no subject variant 'zzz'" in out.fallback_reason
    odd = FiredTrigger("../../etc", "k", T0, ["p1"])
    out = renderer.render(odd, profile(), ITEMS[:1], [], "a")
    assert out.fallback and out.subject and "<script" not in out.html


@pytest.mark.parametrize("file, source, reason", [
    ("body.html.j2", "{% extends '_base.html.j2' %}{% block content %}{% if %}{% endblock %}",
     "TemplateSyntaxError"),
    ("body.txt.j2", "Hi {{ customer.nickname }}", "UndefinedError"),
    ("subject_a.txt.j2", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
    ("preheader.txt.j2", "{{ items.append(1) }}", "SecurityError"),
    ("body.txt.j2", "{{ 1 // 0 }}", "ZeroDivisionError"),
    ("subject_a.txt.j2", "{% include 'missing.j2' %}", "TemplateNotFound"),
    ("subject_a.txt.j2", "   \n ", "empty subject"),
    ("body.html.j2", "{{ '<script>x</script>'|safe }}", "script element"),
])
def test_any_template_failure_gives_the_static_fallback(templates, file, source, reason):
    (templates / "cart_abandonment" / file).write_text(source)
    out = Renderer(templates).render(CART, profile(), ITEMS, RECS, "a")
    assert out.fallback and reason in out.fallback_reason
    assert out.subject == "You left something in your cart"


def test_a_broken_fallback_file_still_gives_generic_content(templates):
    (templates / "cart_abandonment" / "body.txt.j2").write_text("{{ nope }}")
    (templates / "cart_abandonment" / "fallback.json").write_text('{"subject": 1}')
    out = Renderer(templates).render(CART, profile(), ITEMS, RECS, "a")
    assert out.fallback and "UndefinedError" in out.fallback_reason
    assert "fallback.json unusable" in out.fallback_reason
    assert out.subject and out.html and out.text


def test_variant_choice_is_stable_and_spread():
    # Pinned: a change of hashing would silently move customers between variants.
    assert [choose_variant(c, "cart_abandonment", ["a", "b"]) for c in ("c1", "c4")] == ["a", "b"]
    assert choose_variant("c4", "cart_abandonment", ["b", "a"]) == "b"
    assert choose_variant("c1", "cart_abandonment", []) == "a"
    picks = [choose_variant(f"c{i}", "browse_intensity", ("a", "b")) for i in range(2000)]
    assert 900 < picks.count("a") < 1100


def test_templates_dir_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError):
        Renderer(tmp_path / "nope")


def test_plain_text_parts_are_single_spaced_lines(renderer):
    out = renderer.render(BROWSE, profile(), ITEMS[:1], RECS, "b")
    assert not re.search(r"[ \t]+\n", out.text)


def _markup(html: str) -> list[tuple]:
    """Elements with their attributes (in any order) and text, whitespace-insensitive."""
    from html.parser import HTMLParser

    out: list[tuple] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag, attrs):
            out.append(("<", tag, tuple(sorted(attrs))))

        def handle_endtag(self, tag):
            out.append((">", tag))

        def handle_data(self, data):
            if data.strip():
                out.append(("text", " ".join(data.split())))

    Reader().feed(html)
    return out


@pytest.mark.parametrize("trigger", [CART, BROWSE])
@pytest.mark.parametrize("variant", ["a", "b"])
def test_css_inlined_at_load_gives_the_markup_of_inlining_each_email(renderer, trigger, variant):
    """The templates load with the stylesheet inlined; inlining each rendered email instead
    (what a template the loader cannot inline gets) makes the same elements and styles."""
    per_email = Renderer()
    per_email._inlining.per_email, per_email._inlining._inlined = True, {}
    for items, recs in ((ITEMS, RECS), (ITEMS[:1], [])):
        fast = renderer.render(trigger, profile(), items, recs, variant)
        slow = per_email.render(trigger, profile(), items, recs, variant)
        assert not fast.fallback and "<style" not in fast.html
        assert _markup(fast.html) == _markup(slow.html)
        assert (fast.subject, fast.text) == (slow.subject, slow.text)
    assert not renderer._inlining.per_email


def test_a_template_tag_inside_an_html_tag_is_inlined_per_email(templates):
    macros = templates / "_macros.html.j2"
    macros.write_text(macros.read_text().replace(
        '<td class="item-cell" colspan="{{ 1 if p.image_url else 2 }}">',
        '<td class="item-cell"{% if not p.image_url %} colspan="2"{% endif %}>'))
    renderer = Renderer(templates)
    out = renderer.render(CART, profile(), ITEMS, RECS, "a")
    assert renderer._inlining.per_email and not out.fallback
    cells = re.findall(r'<td class="item-cell"[^>]*>', out.html)
    assert len(cells) == 3 and all('style="padding: 12px 0;' in cell for cell in cells)
    assert sum('colspan="2"' in cell for cell in cells) == 2  # the two without an image
    assert "<style" not in out.html


# ------------------------------------------------------------------ segments (render context)

NEW_HIGH = Segment(5, 1, 1, "new", "high", 2, "customer")


def test_a_segment_changes_the_note_and_a_subject_variant(renderer):
    out = renderer.render(BROWSE, profile(), ITEMS[:1], RECS, "b", segment=NEW_HIGH, score=61.5)
    assert not out.fallback
    assert out.subject == "New here? Top picks in notebook"
    assert "Welcome to Example Shop: we are glad you found us." in out.html
    assert "Welcome to Example Shop: we are glad you found us." in out.text
    lapsed = renderer.render(CART, profile(), ITEMS, RECS, "a",
                             segment=NEW_HIGH._replace(lifecycle="lapsed"))
    assert lapsed.subject == "Welcome back! Ada, you left something in your cart"
    assert "We have missed you." in lapsed.html and "We have missed you." in lapsed.text


def test_no_segment_still_renders_without_fallback_and_without_a_note(renderer):
    for trigger in (CART, BROWSE):
        for variant in ("a", "b"):
            out = renderer.render(trigger, profile(), ITEMS, RECS, variant)
            assert not out.fallback, out.fallback_reason
            assert "Welcome to" not in out.html and "missed you" not in out.text
    plain = renderer.render(BROWSE, profile(), ITEMS[:1], RECS, "b")
    assert plain.subject == "Top picks in notebook"


def test_segment_strings_cannot_inject_markup(templates):
    hostile = "<script>alert(1)</script>\"><img src=x onerror=alert(1)>"
    body = templates / "browse_intensity" / "body.html.j2"
    body.write_text(body.read_text().replace(
        "{% block content %}",
        "{% block content %}<p>{{ segment.crm_stage }}|{{ segment.lifecycle }}|{{ score }}</p>",
    ))
    subject = templates / "browse_intensity" / "subject_a.txt.j2"
    subject.write_text("{{ segment.crm_stage }} {{ segment.rfm }}")
    seg = Segment(5, 1, 1, hostile, "high", None, hostile + "\r\nBcc: victim@example.com")
    out = Renderer(templates).render(BROWSE, profile(), ITEMS[:1], RECS, "a", segment=seg,
                                     score=99.5)
    assert not out.fallback, out.fallback_reason
    assert "<script" not in out.html.lower() and "<img src=x" not in out.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out.html and "|100</p>" in out.html
    assert "\r" not in out.subject and "\n" not in out.subject and out.subject.endswith(" 511")


def test_templates_see_the_segment_only_through_the_context(templates):
    # Nothing raw: no state, no profile record, no payload request reaches a template.
    for name in ("state", "profile", "request", "features"):
        subject = templates / "browse_intensity" / "subject_a.txt.j2"
        subject.write_text(f"{{{{ {name} }}}}")
        out = Renderer(templates).render(BROWSE, profile(), ITEMS[:1], RECS, "a",
                                         segment=NEW_HIGH, score=10.0)
        assert out.fallback and "UndefinedError" in (out.fallback_reason or ""), name
