"""Composing a payload: the stateless half of an emitted trigger (DESIGN.md section 4,
Scoring and Rendering).

    PayloadRequest (from the keyed core) -> Composer.compose -> EmailPayload

The keyed rules (transforms/core.py) decide *that* an email goes out and fix everything that
depends on the customer's state at the fire time: the message id, the engagement score, the
seeds and exclusions of the recommendations, the products the customer's own events
described, quiet hours. What is left needs no state: top-k recommendations, catalog lookups
and rendering. Kept apart, it runs as its own stage after the keyed one (a stateless map an
engine can scale out on its own), and the keyed operator, whose time bounds latency and
checkpoints, does none of the template work. The result is the same whichever stage does it.

Sizes (DESIGN.md section 8): a payload carries at most `max_evidence_items` evidence product ids
(and source event ids), its email shows at most `max_rendered_items` of them, the recipient
name is cleaned for headers (transforms/sizes.display_name); a payload still over
`max_output_bytes` encoded becomes its trigger's static fallback (flagged, with the reason),
then loses its recommendations and evidence, then gets the generic fallback content: what is
left is bounded by the settings (sizes.check_output_limit, checked when the Composer is built).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from transforms.catalog import Catalog, CatalogItem
from transforms.codec import encode_payload
from transforms.model import EmailPayload, FiredTrigger, PayloadRequest, Product, Recommendation
from transforms.recommend import Recommender
from transforms.render import Rendered, Renderer, choose_variant
from transforms.settings import CoreSettings
from transforms.sizes import check_output_limit, display_name
from transforms.triggers.post_purchase import TYPE as POST_PURCHASE

# Triggers whose recommendations are complements of their evidence (co-purchases first).
COMPLEMENTARY = frozenset({POST_PURCHASE})


class Composer:
    """Recommender, catalog and templates, configured once; `compose` is a pure function."""

    def __init__(
        self,
        settings: CoreSettings,
        recommender: Recommender | None = None,
        catalog: Catalog | None = None,
        renderer: Renderer | None = None,
    ) -> None:
        check_output_limit(settings)
        self.top_k = settings.top_k
        self.max_evidence = settings.max_evidence_items
        self.max_rendered = settings.max_rendered_items
        self.max_name = settings.max_name_length
        self.max_bytes = settings.max_output_bytes
        self.recommender = recommender or Recommender(None)
        self.catalog = catalog
        self.renderer = renderer or Renderer()

    def compose(self, req: PayloadRequest) -> EmailPayload:
        """Recommend, look the products up, render, assemble."""
        fired, profile = req.trigger, req.profile
        count = len(fired.evidence)
        cap = self.max_evidence
        if count > cap or len(fired.source_event_ids) > cap:
            fired = dataclasses.replace(
                fired, evidence=fired.evidence[:cap], source_event_ids=fired.source_event_ids[:cap]
            )
        name = display_name(profile.first_name, self.max_name)
        if name != profile.first_name:
            profile = dataclasses.replace(profile, first_name=name)
        ranked = self.recommender.recommend(
            req.seeds, req.categories, set(req.exclude), self.top_k,
            complements_of=fired.evidence if fired.type in COMPLEMENTARY else (),
        )
        shown = fired.evidence[: self.max_rendered]
        lookup = self._lookup([*shown, *(pid for pid, _ in ranked)], req.known)
        recommendations = [_recommendation(pid, score, lookup.get(pid)) for pid, score in ranked]
        items = [lookup.get(pid) for pid in shown]
        variant = req.variant if req.variant is not None else self.variant(
            req.customer_id, fired.type)
        rendered = self.renderer.render(
            dataclasses.replace(fired, evidence=shown) if len(shown) < len(fired.evidence)
            else fired,
            profile, items, recommendations, variant, item_count=count,
            segment=req.segment, score=req.engagement_score,
        )
        payload = EmailPayload(
            message_id=req.message_id,
            customer_id=req.customer_id,
            recipient_email=profile.email or "",
            recipient_name=name,
            locale=profile.locale,
            time_zone=req.time_zone,
            trigger=fired,
            campaign=f"{fired.type}.v1",
            variant=variant,
            subject=rendered.subject,
            preheader=rendered.preheader,
            html=rendered.html,
            text=rendered.text,
            fallback=rendered.fallback,
            fallback_reason=rendered.fallback_reason,
            recommendations=recommendations,
            engagement_score=req.engagement_score,
            send_after=req.send_after,
            expires_at=req.expires_at,
            source_event_ids=list(fired.source_event_ids),
            segment=req.segment,
        )
        if _upper_bound(payload) <= self.max_bytes:
            return payload
        return self._within_limit(payload)

    def variant(self, customer_id: str, trigger_type: str) -> str:
        """The customer's subject variant for a trigger type when the request carries none
        (render.choose_variant over the templates' variants)."""
        return choose_variant(customer_id, trigger_type, self.renderer.variants(trigger_type))

    def _within_limit(self, payload: EmailPayload) -> EmailPayload:
        """`payload`, or the smaller forms of it described in the module docstring, whichever
        first fits `max_output_bytes` encoded."""
        size = len(encode_payload(payload))
        if size <= self.max_bytes:
            return payload
        kind = payload.trigger.type
        reason = f"payload of {size} bytes over the output limit of {self.max_bytes} bytes"
        payload = _with_content(payload, self.renderer.fallback(kind, reason))
        if len(encode_payload(payload)) <= self.max_bytes:
            return payload
        stripped = dataclasses.replace(
            payload,
            trigger=dataclasses.replace(payload.trigger, evidence=[], source_event_ids=[]),
            recommendations=[],
            source_event_ids=[],
        )
        if len(encode_payload(stripped)) <= self.max_bytes:
            return stripped
        return _with_content(stripped, self.renderer.fallback(kind, reason, generic=True))

    def _lookup(self, ids: Iterable[str], known: dict[str, Product]) -> dict[str, CatalogItem]:
        """Catalog data for `ids`; products missing there fall back to what the stream said."""
        ids = list(dict.fromkeys(ids))
        found = self.catalog.get_many(ids) if self.catalog is not None else {}
        for pid in ids:
            if pid not in found and pid in known:
                p = known[pid]
                found[pid] = CatalogItem(
                    product_id=pid,
                    name=None,
                    category=p.category,
                    brand=p.brand,
                    price=p.price,
                    url=None,
                    image_url=None,
                )
        return found


def _recommendation(pid: str, score: float, item: CatalogItem | None) -> Recommendation:
    if item is None:
        return Recommendation(product_id=pid, score=score)
    return Recommendation(
        product_id=pid,
        score=score,
        name=item.name,
        category=item.category,
        brand=item.brand,
        price=item.price,
        url=item.url,
        image_url=item.image_url,
    )


def _with_content(payload: EmailPayload, r: Rendered) -> EmailPayload:
    return dataclasses.replace(
        payload, subject=r.subject, preheader=r.preheader, html=r.html, text=r.text,
        fallback=r.fallback, fallback_reason=r.fallback_reason,
    )


def _upper_bound(p: EmailPayload) -> int:
    """Bytes the encoded payload cannot exceed: every string at 4 bytes a character plus its
    length prefix, and a generous allowance for numbers, unions and array framing."""
    t: FiredTrigger = p.trigger
    strings = [
        p.message_id, p.customer_id, p.recipient_email, p.recipient_name or "", p.locale or "",
        p.time_zone, t.type, t.key, t.category or "", p.campaign, p.variant, p.subject,
        p.preheader, p.html, p.text, p.fallback_reason or "",
        *t.evidence, *t.source_event_ids, *p.source_event_ids,
    ]
    for r in p.recommendations:
        strings += [r.product_id, r.name or "", r.category or "", r.brand or "", r.url or "",
                    r.image_url or ""]
    seg = p.segment
    if seg is not None:  # rfm, lifecycle, tier, crm stage; the ints in the allowance
        strings += [seg.rfm, seg.lifecycle, seg.engagement_tier, seg.crm_stage or ""]
    return sum(4 * len(s) + 16 for s in strings) + 32 * len(p.recommendations) + 256
