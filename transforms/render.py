"""Rendering a fired trigger into an email: subject, preheader, HTML and plain text.

    (FiredTrigger, CustomerProfile | None, evidence items, recommendations, variant,
     segment, score) -> Rendered

Templates live in `templates/<trigger_type>/`:

    subject_<variant>.txt.j2   one per subject-line variant (a, b, ...)
    preheader.txt.j2
    body.html.j2               extends templates/_base.html.j2 (its <style> gets inlined)
    body.txt.j2
    fallback.json              static {"subject", "preheader", "html", "text"}

Safety. Both environments are sandboxed (no attribute access to Python internals, no mutation
of the context) with StrictUndefined; HTML autoescapes every value, plain text does not (it is
not HTML). Customer strings are only ever *values* in the context, never template source, so
a first name like `{{ 7*7 }}<script>` stays those literal characters: escaped in HTML, as-is
in text. Subject and preheader are collapsed to one line (no header injection); links must be
http(s). The customer's segment and engagement score reach templates only as `segment` (a
dict of plain strings and ints, or None: see transforms/segments.py Segment.context) and
`score` (the score rounded to an int, or None): templates test them before use. Any
failure — a missing field, an unknown product (None among the items), a template syntax or
runtime error, a sandbox violation, a broken fallback file — gives the trigger's
static fallback content with `fallback=True` and the reason: `render` never raises.

Compiled templates are cached per Renderer; `personalize bench` measures a render (the
compose stage, transforms/compose.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import css_inline
from jinja2 import FileSystemLoader, StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from transforms.catalog import DEFAULT_SHOP_URL, CatalogItem, product_name
from transforms.model import CustomerProfile, FiredTrigger, Recommendation
from transforms.segments import Segment
from transforms.sizes import one_line as _one_line

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "a"
MAX_NAME_LENGTH = 64
MAX_SUBJECT_LENGTH = 200
_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")
_SUBJECT = re.compile(r"^subject_([a-z0-9_]+)\.txt\.j2$")
_BLANK_RUNS = re.compile(r"\n{3,}")
_FALLBACK_KEYS = ("subject", "preheader", "html", "text")
# Used when a trigger's own fallback.json is missing or unreadable: nothing can fail here.
_LAST_RESORT = {
    "subject": "News from us",
    "preheader": "",
    "html": (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>News from us</title>'
        '</head><body style="margin: 0; padding: 24px; font-family: Arial, sans-serif;">'
        "<p>Hi there,</p><p>We have something for you.</p></body></html>"
    ),
    "text": "Hi there,\n\nWe have something for you.\n",
}


class Rendered(NamedTuple):
    """One rendered email; `fallback` says the static content was used, and why."""

    subject: str
    preheader: str
    html: str
    text: str
    fallback: bool
    fallback_reason: str | None


def default_templates_dir() -> Path:
    """templates/ of the source tree, else the copy installed under <prefix>/share/personalize."""
    for candidate in (
        Path(__file__).resolve().parent.parent / "templates",
        Path(sys.prefix) / "share" / "personalize" / "templates",
    ):
        if (candidate / "_base.html.j2").is_file():
            return candidate
    raise FileNotFoundError("templates/ not found next to transforms/ nor under sys.prefix")


def choose_variant(customer_id: str, trigger_type: str, variants: Sequence[str]) -> str:
    """The customer's subject variant for this trigger type: stable across runs and processes.

    SHA-256 of (trigger type, customer), not Python's per-process salted hash(); variants are
    sorted first so their order does not matter. No variants -> DEFAULT_VARIANT.
    """
    choices = sorted(set(variants))
    if not choices:
        return DEFAULT_VARIANT
    digest = hashlib.sha256(f"{trigger_type}\x00{customer_id}".encode()).digest()
    return choices[int.from_bytes(digest[:8], "big") % len(choices)]


class Renderer:
    """Renders emails from a templates directory (the repository's templates/ by default)."""

    def __init__(
        self,
        templates_dir: Path | None = None,
        *,
        shop_name: str = "Example Shop",
        shop_url: str = DEFAULT_SHOP_URL,
        currency: str = "$",
    ) -> None:
        self.templates_dir = Path(templates_dir) if templates_dir else default_templates_dir()
        if not self.templates_dir.is_dir():
            raise FileNotFoundError(f"templates directory not found: {self.templates_dir}")
        options: dict[str, Any] = dict(
            undefined=StrictUndefined, auto_reload=False, trim_blocks=True, lstrip_blocks=True,
        )
        self._inlining = _InliningLoader(self.templates_dir)
        self._html_env = ImmutableSandboxedEnvironment(
            autoescape=True, loader=self._inlining, **options
        )
        self._text_env = ImmutableSandboxedEnvironment(
            autoescape=False, loader=FileSystemLoader(self.templates_dir), **options
        )
        shop_url = shop_url.rstrip("/")
        self._shop = {
            "name": shop_name,
            "url": shop_url,
            "cart_url": f"{shop_url}/cart",
            "unsubscribe_url": f"{shop_url}/unsubscribe",
        }
        self._currency = currency
        self._templates: dict[str, Template] = {}
        self._variants: dict[str, tuple[str, ...]] = {}
        self._fallbacks: dict[str, tuple[dict[str, str], str | None]] = {}

    def variants(self, trigger_type: str) -> tuple[str, ...]:
        """The subject variants present for a trigger type, sorted; () if it has no templates."""
        cached = self._variants.get(trigger_type)
        if cached is None:
            folder = self.templates_dir / trigger_type
            found = []
            if _SAFE_NAME.match(trigger_type) and folder.is_dir():
                found = [m.group(1) for p in folder.iterdir() if (m := _SUBJECT.match(p.name))]
            cached = self._variants[trigger_type] = tuple(sorted(found))
        return cached

    def render(
        self,
        trigger: FiredTrigger,
        profile: CustomerProfile | None,
        items: Sequence[CatalogItem | None],
        recommendations: Sequence[Recommendation],
        variant: str,
        item_count: int | None = None,
        segment: Segment | None = None,
        score: float | None = None,
    ) -> Rendered:
        """The email for `trigger`; the static fallback (flagged, with a reason) on any failure.

        `items` are the catalog entries of `trigger.evidence`, in order: None for a product
        the catalog does not know, which means fallback (the email would be about it).
        `item_count`: how many products the trigger is about, when `items` shows only the
        first ones (default: len(items)); templates read it as `item_count`.
        """
        kind = trigger.type if isinstance(trigger.type, str) else ""
        try:
            if variant not in self.variants(kind):
                raise _Unrenderable(f"no subject variant {variant!r} for {kind!r}")
            # An email about products needs them all; one about none (welcome) needs none.
            if (not items and trigger.evidence) or any(item is None for item in items):
                missing = [p for p, i in zip(trigger.evidence, items, strict=False) if i is None]
                raise _Unrenderable(f"product not in catalog: {', '.join(missing) or 'no items'}")
            context = self._context(trigger, profile, items, recommendations)
            context["item_count"] = max(item_count or 0, len(context["items"]))
            context["segment"] = None if segment is None else segment.context()
            context["score"] = None if score is None else int(round(score))
            subject = _one_line(self._template(kind, f"subject_{variant}.txt.j2").render(context))
            subject = subject[:MAX_SUBJECT_LENGTH]
            if not subject:
                raise _Unrenderable("empty subject")
            preheader = _one_line(self._template(kind, "preheader.txt.j2").render(context))
            context = {**context, "subject": subject, "preheader": preheader}
            html = self._template(kind, "body.html.j2").render(context)
            if self._inlining.per_email:  # a template the loader could not inline
                html = _INLINER.inline(html)
            if "<script" in html.lower():
                raise _Unrenderable("script element in rendered HTML")
            text = _tidy_text(self._template(kind, "body.txt.j2").render(context))
        except Exception as exc:  # a template can raise anything; the fallback is the contract
            return self._fallback(kind, _reason(exc))
        return Rendered(subject, preheader, html, text, False, None)

    def fallback(self, trigger_type: str, reason: str, generic: bool = False) -> Rendered:
        """The trigger's static fallback content (flagged, with `reason`); `generic`: the
        built-in last-resort content, a few hundred bytes whatever the templates hold."""
        if generic:
            c = _LAST_RESORT
            return Rendered(c["subject"], c["preheader"], c["html"], c["text"], True, reason)
        return self._fallback(trigger_type, reason)

    # ------------------------------------------------------------------ internals

    def _template(self, trigger_type: str, name: str) -> Template:
        path = f"{trigger_type}/{name}"
        template = self._templates.get(path)
        if template is None:
            env = self._html_env if name.endswith(".html.j2") else self._text_env
            template = self._templates[path] = env.get_template(path)
        return template

    def _context(
        self,
        trigger: FiredTrigger,
        profile: CustomerProfile | None,
        items: Sequence[CatalogItem | None],
        recommendations: Sequence[Recommendation],
    ) -> dict[str, Any]:
        """The template context: plain dicts of plain values, every customer string cleaned."""
        first_name = _one_line(profile.first_name or "")[:MAX_NAME_LENGTH] if profile else ""
        locale = (profile.locale if profile else None) or "en"
        shown = [self._product(item) for item in items if item is not None]
        change = self._change(trigger.details)
        if change is not None and change["new_price"] is not None and shown:
            # The changed product (the evidence) at its new price, not the catalog's last one.
            shown[0] = {**shown[0], "price": change["new_price"],
                        "price_text": change["new_price_text"]}
        return {
            "customer": {"first_name": first_name or None, "locale": locale},
            "lang": _one_line(locale.split("-")[0].split("_")[0])[:8] or "en",
            "trigger": {
                "type": trigger.type,
                "key": trigger.key,
                "category": trigger.category,
                "category_label": _category_label(trigger.category),
            },
            "items": shown,
            "recommendations": [self._product(rec) for rec in recommendations],
            "shop": self._shop,
            "change": change,
        }

    def _change(self, details: dict[str, Any] | None) -> dict[str, Any] | None:
        """A price change's old and new price (and their text), for price-drop templates."""
        if not details:
            return None
        change: dict[str, Any] = {}
        for name in ("old_price", "new_price"):
            price = details.get(name)
            ok = isinstance(price, float | int) and 0 <= price < float("inf")
            change[name] = price if ok else None
            change[f"{name}_text"] = f"{self._currency}{price:,.2f}" if ok else None
        old, new = change["old_price"], change["new_price"]
        change["saving_pct"] = (
            int((old - new) * 100 // old) if old and new is not None and new < old else None
        )
        return change

    def _product(self, p: CatalogItem | Recommendation) -> dict[str, Any]:
        price = p.price if p.price is not None and p.price >= 0 else None
        return {
            "product_id": p.product_id,
            "name": _one_line(p.name or "") or product_name(p.product_id, p.brand, p.category),
            "brand": _one_line(p.brand or "").title() or None,
            "category": p.category,
            "price": price,
            "price_text": f"{self._currency}{price:,.2f}" if price is not None else None,
            "url": _http_url(p.url) or f"{self._shop['url']}/p/{p.product_id}",
            "image_url": _http_url(p.image_url),
        }

    def _fallback(self, trigger_type: str, reason: str) -> Rendered:
        content, problem = self._fallback_content(trigger_type)
        if problem:
            reason = f"{reason}; {problem}"
        log.warning("render fallback for %s: %s", trigger_type, reason)
        return Rendered(
            content["subject"], content["preheader"], content["html"], content["text"],
            True, reason,
        )

    def _fallback_content(self, trigger_type: str) -> tuple[dict[str, str], str | None]:
        cached = self._fallbacks.get(trigger_type)
        if cached is None:
            problem = None
            content = _LAST_RESORT
            path = self.templates_dir / trigger_type / "fallback.json"
            try:
                if not _SAFE_NAME.match(trigger_type):
                    raise ValueError(f"unknown trigger type {trigger_type!r}")
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not all(
                    isinstance(data.get(k), str) for k in _FALLBACK_KEYS
                ):
                    raise ValueError(f"{path} needs string fields {', '.join(_FALLBACK_KEYS)}")
                content = {k: data[k] for k in _FALLBACK_KEYS}
                content["subject"] = _one_line(content["subject"]) or _LAST_RESORT["subject"]
                content["preheader"] = _one_line(content["preheader"])
            except (OSError, ValueError) as exc:
                problem = f"fallback.json unusable, generic content used ({_reason(exc)})"
            cached = self._fallbacks[trigger_type] = (content, problem)
        return cached


_INLINER = css_inline.CSSInliner(
    keep_style_tags=False, keep_link_tags=False, load_remote_stylesheets=False
)
_TAGS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S | re.I)
_MARK = re.compile(r"<!--\ue000(\d+)\ue001-->|\ue000(\d+)\ue001")
_TAG_IN_TAG = re.compile(r"<[a-zA-Z][^<>]*<!--\ue000")


class _InliningLoader(FileSystemLoader):
    """Loads the HTML templates with the stylesheet already inlined into style="" attributes
    (css_inline), so rendering an email does no CSS work: the styles are static markup, which
    the template only repeats and fills in. The CSS is the <style> blocks of the directory's
    HTML templates (_base.html.j2); a whole document is inlined as a document (its <style>
    removed), any other file as a fragment.

    Template tags are kept out of the parser's way: `{{ ... }}` become private-use markers
    (text and attribute values), `{% ... %}` and `{# ... #}` HTML comments, which the HTML
    parser keeps in place even between table rows; all are put back after. A tag *inside* an
    element's start tag cannot be kept so: a directory with one is not inlined at load, and
    `per_email` tells the renderer to inline every rendered email instead (as correct, slower).
    """

    def __init__(self, searchpath: Path) -> None:
        super().__init__(searchpath)
        # All or nothing, when the renderer is built: a layout inlined at load has no
        # <style> left for a per-email inlining of a page that includes it.
        root = Path(searchpath)
        paths = sorted(root.rglob("*.html.j2"))
        sources = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in paths}
        css = "\n".join(block for src in sources.values() for block in _STYLE.findall(src))
        inlined = {name: _inline(src, css) for name, src in sources.items()}
        self.per_email = any(src is None for src in inlined.values())
        self._inlined = {} if self.per_email else {k: v for k, v in inlined.items() if v}

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        return self._inlined.get(template, source), filename, uptodate


def _inline(source: str, css: str) -> str | None:
    """`source` with `css` inlined (see _InliningLoader), or None if it cannot be."""
    kept: list[str] = []

    def mark(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        n = len(kept) - 1
        return f"\ue000{n}\ue001" if match.group(0)[1] == "{" else f"<!--\ue000{n}\ue001-->"

    protected = _TAGS.sub(mark, source)
    if _TAG_IN_TAG.search(protected):
        log.warning("a template tag inside an HTML tag: CSS is inlined per email (slower)")
        return None
    try:
        if "<html" in protected.lower():
            out = _INLINER.inline(protected)
        else:
            out = css_inline.inline_fragment(protected, css)
    except (css_inline.InlineError, ValueError) as exc:
        log.warning("cannot inline the stylesheet into a template (%s): per email", exc)
        return None
    return _MARK.sub(lambda m: kept[int(m.group(1) or m.group(2))], out)


class _Unrenderable(Exception):
    """The inputs cannot make this email (no catalog data, unknown variant, empty subject)."""


def _reason(exc: BaseException) -> str:
    """A short machine-and-human readable reason: `ExceptionType: message`."""
    message = _one_line(str(exc))
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:300]


def _tidy_text(text: str) -> str:
    """Plain text without trailing spaces or runs of blank lines, ending in one newline."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)) + "\n"


def _category_label(category: str | None) -> str | None:
    """"computers.notebook" -> "notebook"; a numeric category id says nothing -> None."""
    leaf = _one_line((category or "").rsplit(".", 1)[-1].replace("_", " "))
    return leaf if leaf and not leaf.isdigit() else None


def _http_url(url: str | None) -> str | None:
    """The URL if it is http(s) and on one line, else None (no javascript:, data:, ...)."""
    if not url:
        return None
    url = url.strip()
    if url.lower().startswith(("https://", "http://")) and url.isprintable() and " " not in url:
        return url
    return None
