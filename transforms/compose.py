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
"""

from __future__ import annotations

from collections.abc import Iterable

from transforms.catalog import Catalog, CatalogItem
from transforms.model import EmailPayload, PayloadRequest, Product, Recommendation
from transforms.recommend import Recommender
from transforms.render import Renderer, choose_variant
from transforms.settings import CoreSettings


class Composer:
    """Recommender, catalog and templates, configured once; `compose` is a pure function."""

    def __init__(
        self,
        settings: CoreSettings,
        recommender: Recommender | None = None,
        catalog: Catalog | None = None,
        renderer: Renderer | None = None,
    ) -> None:
        self.top_k = settings.top_k
        self.recommender = recommender or Recommender(None)
        self.catalog = catalog
        self.renderer = renderer or Renderer()

    def compose(self, req: PayloadRequest) -> EmailPayload:
        """Recommend, look the products up, render, assemble."""
        fired, profile = req.trigger, req.profile
        ranked = self.recommender.recommend(
            req.seeds, req.categories, set(req.exclude), self.top_k
        )
        lookup = self._lookup([*fired.evidence, *(pid for pid, _ in ranked)], req.known)
        recommendations = [_recommendation(pid, score, lookup.get(pid)) for pid, score in ranked]
        items = [lookup.get(pid) for pid in fired.evidence]
        variant = choose_variant(req.customer_id, fired.type, self.renderer.variants(fired.type))
        rendered = self.renderer.render(fired, profile, items, recommendations, variant)
        return EmailPayload(
            message_id=req.message_id,
            customer_id=req.customer_id,
            recipient_email=profile.email or "",
            recipient_name=profile.first_name,
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
        )

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
