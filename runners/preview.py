"""`personalize preview`: sample emails of every trigger and subject variant, as files.

    personalize preview --out DIR

    DIR/<trigger>_<variant>.html   the payload's HTML, exactly as it goes to the output topic
    DIR/<trigger>_<variant>.txt    its plain-text part
    DIR/index.html                 subject, preheader and links of each

Each sample is a real payload: a short scripted journey of one customer (views, cart adds)
run through the core with a small sample catalog, so templates, CSS inlining, fallback rules
and recommendations are those of the job. The customer of each sample is picked so that the
core's own variant choice lands on the wanted variant. Time is data (a fixed mid-day UTC
instant), so the output is the same on every run.
"""

from __future__ import annotations

import argparse
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
    EMAIL_CHANNEL,
    PAYLOAD,
    PRODUCT_VIEW,
    BehaviourEvent,
    CustomerProfile,
    EmailPayload,
    Item,
    Product,
)
from transforms.product_stage import SIGNAL, ProductStage, product_of
from transforms.recommend import Recommender
from transforms.render import Renderer, choose_variant
from transforms.settings import DAY, MINUTE, Settings
from transforms.triggers.browse_intensity import TYPE as BROWSE_INTENSITY
from transforms.triggers.cart_abandonment import TYPE as CART_ABANDONMENT

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

    @property
    def html_name(self) -> str:
        """<trigger>_<variant>.html."""
        return f"{self.trigger}_{self.variant}.html"

    @property
    def text_name(self) -> str:
        """<trigger>_<variant>.txt."""
        return f"{self.trigger}_{self.variant}.txt"


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
            payloads = _drive(core, journey(cid, settings), T0 + 2 * settings.core.cart_delay)
            wanted = [p for p in payloads if p.trigger.type == trigger.type]
            if not wanted:
                raise RuntimeError(f"the {trigger.type} sample journey emitted no payload")
            samples.append(Sample(trigger.type, variant, wanted[0]))
    return samples


def _customer_for(trigger_type: str, variant: str, variants: tuple[str, ...]) -> str:
    """The first preview customer id whose variant for `trigger_type` is `variant`."""
    for n in itertools.count(1):
        cid = f"preview-{n}"
        if choose_variant(cid, trigger_type, variants) == variant:
            return cid
    raise AssertionError("unreachable")


def _drive(core: Core, items: list[Item], until: int) -> list[EmailPayload]:
    state = None
    for item in items:
        state, _, _ = core.step(state, item)
    _, outputs, _ = core.wake(state, until)
    return [core.compose(record) for kind, record in outputs if kind == PAYLOAD]


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
        "<table><tr><th>trigger</th><th>variant</th><th>subject</th><th>preheader</th>"
        "<th>fallback</th><th>files</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>\n"
    )
