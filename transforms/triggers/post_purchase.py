"""Post-purchase cross-sell (DESIGN.md section 10): `post_purchase_delay` (3 d) after a purchase.

A purchase of a product at t arms the deadline t + post_purchase_delay and adds the product to
the slot's items; a later purchase before the deadline re-arms it from its own time and adds its
product (one email for the orders of a few days, sent after the last). When event time reaches
the deadline it fires at exactly that instant with the purchased products (sorted) as evidence;
the compose stage recommends complements of them: products bought together with them in the
training data (co-purchase pairs learnt by `personalize train`, transforms/recommend.py), topped
up from the item-to-item neighbours and popularity. A purchase at exactly the deadline re-arms
(events of an instant are applied before its deadlines). A purchase without a product arms
nothing.

Key: a stable id of the purchased products (SHA-1 of their sorted ids).
Slot: (deadline, {product_id: (purchase event id, Product)}, None) in purchase order, at most
`post_purchase_max_items` products (the oldest evicted, counted as dropped
`evicted:post_purchase`), until its deadline fires; then (None, the same items, fire time) so
the payload describes the products (`products`, read by the core for the payload request: a
replay without a catalog renders them from what the purchase events said), dropped at the next
purge.
"""

from __future__ import annotations

import hashlib

from transforms.bounds import evict
from transforms.model import PURCHASE, BehaviourEvent, FiredTrigger, Product
from transforms.settings import CoreSettings
from transforms.state import CustomerState

TYPE = "post_purchase"
EVICTED_ITEMS = "evicted:post_purchase"

Slot = tuple[int | None, dict[str, tuple[str, Product]], int | None]


def items_key(products: list[str]) -> str:
    """A stable id of a set of products."""
    return hashlib.sha1("|".join(sorted(products)).encode()).hexdigest()[:16]


class PostPurchase:
    """Fires `post_purchase_delay` after the last purchase, with what was bought."""

    type = TYPE
    has_deadline = True
    event_types = frozenset({PURCHASE})

    def __init__(self, settings: CoreSettings) -> None:
        self.enabled = settings.post_purchase_enabled
        self.delay = settings.post_purchase_delay
        self.max_items = max(1, settings.post_purchase_max_items)

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """A purchase arms or re-arms, adding its product."""
        product = event.product
        if product is None:
            return []
        slot: Slot | None = state.triggers.get(TYPE)
        items = {} if slot is None or slot[0] is None else slot[1]
        items.pop(product.product_id, None)  # insertion order = purchase order
        items[product.product_id] = (event.event_id, product)
        state.triggers[TYPE] = (event.occurred_at + self.delay, items, None)
        if len(items) > self.max_items:
            return [EVICTED_ITEMS] * evict(items, self.max_items)
        return []

    def deadline(self, state: CustomerState) -> int | None:
        """The armed deadline."""
        slot: Slot | None = state.triggers.get(TYPE)
        return None if slot is None else slot[0]

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """Fire with the purchased products as evidence."""
        items = state.triggers[TYPE][1]
        state.triggers[TYPE] = (None, items, t)
        products = sorted(items)
        return [
            FiredTrigger(
                type=TYPE,
                key=items_key(products),
                fired_at=t,
                evidence=products,
                source_event_ids=sorted(eid for eid, _ in items.values()),
            )
        ]

    def products(self, state: CustomerState) -> dict[str, Product]:
        """The purchased products of the slot, as their events described them."""
        slot: Slot | None = state.triggers.get(TYPE)
        return {} if slot is None else {pid: p for pid, (_, p) in slot[1].items()}

    def expires_at(self, state: CustomerState) -> int | None:
        """The deadline while armed; once fired, the fire time (dropped at the next purge)."""
        slot: Slot | None = state.triggers.get(TYPE)
        return None if slot is None else slot[0] if slot[0] is not None else slot[2]

    def purge(self, state: CustomerState, now: int) -> None:
        """Drop a fired slot."""
        slot: Slot | None = state.triggers.get(TYPE)
        if slot is not None and slot[0] is None:
            del state.triggers[TYPE]


TRIGGER = PostPurchase
