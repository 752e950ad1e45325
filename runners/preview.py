"""`personalize preview`: sample emails of every trigger and subject variant, as files.

    personalize preview --out DIR

    DIR/<trigger>_<variant>.html   the payload's HTML, exactly as it goes to the output topic
    DIR/<trigger>_<variant>.txt    its plain-text part
    DIR/<trigger>_<variant>_<lifecycle>_<tier>.html / .txt, and ..._no_segment
                                   every segment variant of the trigger (below)
    DIR/index.html                 subject, preheader, segment and links of each

Each sample is a real payload: a short scripted journey of one customer (views, cart adds)
run through the core with a small sample catalog, so templates, CSS inlining, fallback rules
and recommendations are those of the job. The customer of each sample is picked so that the
core's own variant choice lands on the wanted variant. Time is data (a fixed mid-day UTC
instant), so the output is the same on every run.

Segment variants: a scripted journey cannot make every segment (a customer browsing now is
never lapsed), so each sample's payload request is composed again with its segment set to
each lifecycle stage x engagement tier (transforms/segments.py), and once with no segment at
all, exactly as the compose stage would render them.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transforms.catalog import DEFAULT_SHOP_URL, CatalogItem, InMemoryCatalog
from transforms.catalog_changes import BACK_IN_STOCK, PRICE_DROP, CatalogChange
from transforms.core import Core
from transforms.model import (
    ADD_TO_CART,
    CONSENT_CHANGE,
    EMAIL_CHANNEL,
    EMAIL_CLICK,
    PAGE_VIEW,
    PAYLOAD,
    PRODUCT_VIEW,
    PURCHASE,
    BehaviourEvent,
    CustomerProfile,
    EmailPayload,
    Item,
    PayloadRequest,
    Product,
)
from transforms.product_stage import SIGNAL, ProductStage, product_of
from transforms.recommend import Recommender
from transforms.render import Renderer, choose_variant
from transforms.segments import LIFECYCLES, TIERS, Segment
from transforms.settings import DAY, MINUTE, Settings
from transforms.triggers.browse_intensity import TYPE as BROWSE_INTENSITY
from transforms.triggers.cart_abandonment import TYPE as CART_ABANDONMENT
from transforms.triggers.engagement_followup import TYPE as ENGAGEMENT_FOLLOWUP
from transforms.triggers.post_purchase import TYPE as POST_PURCHASE
from transforms.triggers.welcome import TYPE as WELCOME
from transforms.triggers.win_back import TYPE as WIN_BACK

# Tuesday 2026-03-03 12:00 UTC: mid-day, so no sample is held for quiet hours.
T0 = int(datetime(2026, 3, 3, 12, 0, tzinfo=UTC).timestamp() * 1000)

SAMPLE_PRODUCTS = [
    CatalogItem("1005115", "Apple iPhone 11 64GB", "electronics.smartphone", "apple", 699.0),
    CatalogItem("1004856", "Samsung Galaxy A50", "electronics.smartphone", "samsung", 249.99),
    CatalogItem("1004767", "Xiaomi Redmi Note 8", "electronics.smartphone", "xiaomi", 179.5),
    CatalogItem("1002544", "Huawei P30 Lite", "electronics.smartphone", "huawei", 229.0),
    CatalogItem("1003317", "Nokia 7.2", "electronics.smartphone", "nokia", 259.0),
    CatalogItem("1307067", "Lenovo IdeaPad 330", "computers.notebook", "lenovo", 549.0),
    CatalogItem("1306421", "Acer Aspire 5", "computers.notebook", "acer", 499.99),
    CatalogItem("4804056", "Sony WH-1000XM3", "electronics.audio.headphone", "sony", 279.0),
]


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `preview` to the CLI."""
    p = sub.add_parser(
        "preview",
        parents=parents,
        help="render sample emails of each trigger and variant to HTML files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Write the samples and the index; print one line per file."""
    written = write_preview(args.out, settings)
    for sample in written:
        flag = " (fallback)" if sample.payload.fallback else ""
        print(f"preview: {args.out / sample.html_name}  {sample.payload.subject!r}{flag}")
    print(f"preview: {args.out / 'index.html'}")
    return 0


@dataclass(frozen=True)
class Sample:
    """One rendered sample and its file names."""

    trigger: str
    variant: str
    payload: EmailPayload
    segment: str = ""  # "" for the journey's own segment, else <lifecycle>_<tier> or no_segment

    @property
    def stem(self) -> str:
        """<trigger>_<variant>, then _<segment> for a segment variant."""
        base = f"{self.trigger}_{self.variant}"
        return f"{base}_{self.segment}" if self.segment else base

    @property
    def html_name(self) -> str:
        """<stem>.html."""
        return f"{self.stem}.html"

    @property
    def text_name(self) -> str:
        """<stem>.txt."""
        return f"{self.stem}.txt"


def write_preview(out: Path, settings: Settings) -> list[Sample]:
    """Render every (trigger, variant) sample into `out`, plus index.html."""
    samples = build_samples(settings)
    out.mkdir(parents=True, exist_ok=True)
    for s in samples:
        (out / s.html_name).write_text(s.payload.html, encoding="utf-8")
        (out / s.text_name).write_text(s.payload.text, encoding="utf-8")
    (out / "index.html").write_text(index_html(samples), encoding="utf-8")
    return samples


def build_samples(settings: Settings) -> list[Sample]:
    """One payload per (trigger type with a journey, subject variant), through the core."""
    core = Core(
        settings.core,
        recommender=Recommender(None),
        catalog=InMemoryCatalog(SAMPLE_PRODUCTS),
        renderer=Renderer(),
    )
    samples = []
    for trigger in core.triggers:
        journey = JOURNEYS.get(trigger.type)
        if journey is None:
            raise ValueError(f"preview has no sample journey for trigger {trigger.type!r}")
        variants = core.composer.renderer.variants(trigger.type)
        for variant in variants:
            cid = _customer_for(trigger.type, variant, variants)
            requests = _drive(core, journey(cid, settings), _until(trigger.type, settings))
            wanted = [r for r in requests if r.trigger.type == trigger.type]
            if not wanted:
                raise RuntimeError(f"the {trigger.type} sample journey emitted no payload")
            samples.append(Sample(trigger.type, variant, core.compose(wanted[0])))
            samples += _segment_samples(core, trigger.type, variant, wanted[0])
    return samples


def _segment_samples(core: Core, kind: str, variant: str, req: PayloadRequest) -> list[Sample]:
    """`req` composed with each lifecycle stage x tier as its segment, and with none."""
    own = req.segment or Segment(3, 3, 3, LIFECYCLES[0], TIERS[0], None, None)
    out = []
    for lifecycle in LIFECYCLES:
        for tier in TIERS:
            segment = own._replace(lifecycle=lifecycle, engagement_tier=tier)
            payload = core.compose(dataclasses.replace(req, segment=segment))
            out.append(Sample(kind, variant, payload, f"{lifecycle}_{tier}"))
    payload = core.compose(dataclasses.replace(req, segment=None))
    out.append(Sample(kind, variant, payload, "no_segment"))
    return out


def _customer_for(trigger_type: str, variant: str, variants: tuple[str, ...]) -> str:
    """The first preview customer id whose variant for `trigger_type` is `variant`."""
    for n in itertools.count(1):
        cid = f"preview-{n}"
        if choose_variant(cid, trigger_type, variants) == variant:
            return cid
    raise AssertionError("unreachable")


def _drive(core: Core, items: list[Item], until: int) -> list[PayloadRequest]:
    state = None
    for item in items:
        state, _, _ = core.step(state, item)
    _, outputs, _ = core.wake(state, until)
    return [record for kind, record in outputs if kind == PAYLOAD]


def _profile(cid: str) -> CustomerProfile:
    return CustomerProfile(
        customer_id=cid,
        updated_at=T0 - 60 * MINUTE,
        email=f"{cid}@example.invalid",
        first_name="Ada",
        locale="en-GB",
        time_zone="UTC",
        consents={EMAIL_CHANNEL: True},
    )


def _event(cid: str, n: int, etype: str, t: int, item: CatalogItem) -> BehaviourEvent:
    product = Product(item.product_id, item.category, item.brand, item.price)
    return BehaviourEvent(
        event_id=f"{cid}-{n:03d}",
        customer_id=cid,
        event_type=etype,
        occurred_at=t,
        session_id=f"{cid}-s1",
        product=product,
        quantity=1 if etype == ADD_TO_CART else None,
    )


def _cart_journey(cid: str, settings: Settings) -> list[Item]:
    """Views of two phones and headphones, two put in the cart, then silence."""
    phones, headphones = SAMPLE_PRODUCTS[:2], SAMPLE_PRODUCTS[7]
    views = [*phones, headphones, SAMPLE_PRODUCTS[2]]
    items: list[Item] = [_profile(cid)]
    items += [_event(cid, i, PRODUCT_VIEW, T0 + i * MINUTE, p) for i, p in enumerate(views)]
    items += [
        _event(cid, 10 + i, ADD_TO_CART, T0 + (5 + i) * MINUTE, p) for i, p in enumerate(phones)
    ]
    return items


def _browse_journey(cid: str, settings: Settings) -> list[Item]:
    """A notebook view, then `browse_views` smartphone views a minute apart, no cart add."""
    phones = SAMPLE_PRODUCTS[:5]
    items: list[Item] = [_profile(cid), _event(cid, 0, PRODUCT_VIEW, T0, SAMPLE_PRODUCTS[5])]
    for i in range(settings.core.browse_views):
        items.append(
            _event(cid, 1 + i, PRODUCT_VIEW, T0 + (1 + i) * MINUTE, phones[i % len(phones)])
        )
    return items


def _purchase_journey(cid: str, settings: Settings) -> list[Item]:
    """A phone viewed, carted and bought with headphones, then silence."""
    phone, headphones = SAMPLE_PRODUCTS[0], SAMPLE_PRODUCTS[7]
    items: list[Item] = [_profile(cid), _event(cid, 0, PRODUCT_VIEW, T0, phone)]
    items += [_event(cid, 1 + i, ADD_TO_CART, T0 + (1 + i) * MINUTE, p)
              for i, p in enumerate((phone, headphones))]
    items += [_event(cid, 10 + i, PURCHASE, T0 + 5 * MINUTE, p)
              for i, p in enumerate((phone, headphones))]
    return items


def _welcome_journey(cid: str, settings: Settings) -> list[Item]:
    """A sign-up page view, then the email consent grant."""
    core = settings.core
    profile = dataclasses.replace(_profile(cid), consents={EMAIL_CHANNEL: False})
    signup = BehaviourEvent(f"{cid}-001", cid, PAGE_VIEW, T0, f"{cid}-s1",
                            properties={core.welcome_signup_property: core.welcome_signup_value})
    grant = BehaviourEvent(f"{cid}-002", cid, CONSENT_CHANGE, T0 + MINUTE, f"{cid}-s1",
                           consent_channel=EMAIL_CHANNEL, consent_granted=True)
    return [profile, signup, grant]


def _followup_journey(cid: str, settings: Settings) -> list[Item]:
    """Two phones viewed, then a click in an email and no visit after it."""
    items: list[Item] = [_profile(cid)]
    items += [_event(cid, i, PRODUCT_VIEW, T0 + i * MINUTE, p)
              for i, p in enumerate(SAMPLE_PRODUCTS[:2])]
    items.append(BehaviourEvent(f"{cid}-010", cid, EMAIL_CLICK, T0 + 10 * MINUTE,
                                email_message_id="preview-message"))
    return items


def _until(trigger_type: str, settings: Settings) -> int:
    """How far event time goes for a sample: past the trigger's deadline."""
    core = settings.core
    delays = {
        POST_PURCHASE: core.post_purchase_delay,
        WIN_BACK: core.win_back_delay,
        WELCOME: core.welcome_delay,
        ENGAGEMENT_FOLLOWUP: core.followup_window,
    }
    return T0 + 2 * max(core.cart_delay, delays.get(trigger_type, 0))


def _through_product_stage(items: list[Any], changes: list[CatalogChange],
                           settings: Settings) -> list[Any]:
    """`items` and the signals the product stage derives from them and `changes`."""
    stage = ProductStage(settings.core)
    state = None
    for item in [*items, *changes]:
        if product_of(item) is not None:
            state, _, _ = stage.step(state, item)
    _, outputs, _ = stage.wake(state, max(c.occurred_at for c in changes))
    return items + [record for kind, record in outputs if kind == SIGNAL]


def _price_drop_journey(cid: str, settings: Settings) -> list[Any]:
    """A view of a phone whose price was known; a day later it drops by 15 %."""
    phone = SAMPLE_PRODUCTS[0]
    price = phone.price or 100.0
    changes = [
        CatalogChange("preview-price-0", phone.product_id, T0 - DAY, price, True, phone.category),
        CatalogChange("preview-price-1", phone.product_id, T0 + 30 * MINUTE,
                      round(price * 0.85, 2), None, phone.category),
    ]
    items = [_profile(cid), _event(cid, 0, PRODUCT_VIEW, T0, phone)]
    return _through_product_stage(items, changes, settings)


def _back_in_stock_journey(cid: str, settings: Settings) -> list[Any]:
    """A cart add of headphones that were out of stock; later they are back."""
    headphones = SAMPLE_PRODUCTS[7]
    changes = [
        CatalogChange("preview-stock-0", headphones.product_id, T0 - DAY, headphones.price,
                      False, headphones.category),
        CatalogChange("preview-stock-1", headphones.product_id,
                      T0 + 3 * settings.core.cart_delay // 2, None, True, headphones.category),
    ]
    items = [_profile(cid), _event(cid, 0, ADD_TO_CART, T0, headphones)]
    return _through_product_stage(items, changes, settings)



JOURNEYS: dict[str, Callable[[str, Settings], list[Any]]] = {
    CART_ABANDONMENT: _cart_journey,
    BROWSE_INTENSITY: _browse_journey,
    POST_PURCHASE: _purchase_journey,
    WIN_BACK: _purchase_journey,
    WELCOME: _welcome_journey,
    ENGAGEMENT_FOLLOWUP: _followup_journey,
    PRICE_DROP: _price_drop_journey,
    BACK_IN_STOCK: _back_in_stock_journey,
}


def index_html(samples: list[Sample]) -> str:
    """A page listing every sample: trigger, variant, subject, preheader and links."""
    rows = []
    for s in samples:
        p = s.payload
        rows.append(
            "<tr>"
            f"<td>{html.escape(s.trigger)}</td><td>{html.escape(s.variant)}</td>"
            f"<td>{html.escape(_segment_label(p))}</td>"
            f"<td>{html.escape(p.subject)}</td><td>{html.escape(p.preheader)}</td>"
            f"<td>{'yes' if p.fallback else 'no'}</td>"
            f'<td><a href="{html.escape(s.html_name)}">HTML</a> · '
            f'<a href="{html.escape(s.text_name)}">text</a></td>'
            "</tr>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Email preview</title>"
        "<style>body{font-family:Arial,sans-serif;margin:24px;color:#1f2937}"
        "table{border-collapse:collapse}td,th{border:1px solid #d1d5db;padding:6px 10px;"
        "text-align:left}th{background:#f3f4f6}</style></head><body>"
        f"<h1>Email preview</h1><p>{len(samples)} samples rendered by the core "
        f"(shop {html.escape(DEFAULT_SHOP_URL)}).</p>"
        "<table><tr><th>trigger</th><th>variant</th><th>segment</th><th>subject</th>"
        "<th>preheader</th>"
        "<th>fallback</th><th>files</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>\n"
    )


def _segment_label(p: EmailPayload) -> str:
    """The payload's segment in a few words."""
    seg = p.segment
    if seg is None:
        return "none"
    cluster = "-" if seg.cluster is None else str(seg.cluster)
    return f"{seg.lifecycle}, {seg.engagement_tier}, RFM {seg.rfm}, cluster {cluster}"
