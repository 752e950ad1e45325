"""Catalog changes for generated traffic: price drops and rises, stock outs and restocks of the
products customers view and cart, deterministic from a seed.

    with_catalog_changes(items, CatalogTrafficConfig) -> items with CatalogChange interleaved
    (arrival order kept; `personalize generate --catalog-changes N`)

After every `every`-th product view or cart add, a change of one of the last `recent` products
seen is inserted, stamped with the newest event time seen so far (so it is never late), one of:
a price drop of 15-40 %, a rise of 5-20 %, a stock out, or, for a product that is out, a
restock. The first change of a product also states its stock (in stock), so that a later
restock has a known state to come from. `hostile_ratio` of the changes are instead invalid (a
negative price): the job must dead-letter them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from transforms.catalog_changes import CatalogChange, encode_change
from transforms.codec import SCHEMA_ID_OF, confluent_frame
from transforms.model import ADD_TO_CART, PRODUCT_VIEW, BehaviourEvent

CHANGES = "catalog_changes"
CHANGE_SCHEMA_ID = SCHEMA_ID_OF["catalog_change"]


@dataclass(slots=True)
class CatalogTrafficConfig:
    """How often and what kind of catalog changes are mixed into the traffic."""

    every: int = 25          # product events between two changes (0: none)
    recent: int = 50         # a change picks one of the last `recent` products seen
    seed: int = 0
    hostile_ratio: float = 0.0


def with_catalog_changes(items: Iterable[Any], cfg: CatalogTrafficConfig,
                         counts: dict[str, int] | None = None) -> Iterator[Any]:
    """`items` with catalog changes inserted (see the module docstring); `counts`, if
    given, gets "catalog_changes" (all) and "catalog_hostile" (the invalid ones)."""
    counts = {} if counts is None else counts
    counts.setdefault("catalog_changes", 0)
    counts.setdefault("catalog_hostile", 0)
    rng = random.Random(cfg.seed)
    recent: list[tuple[str, str | None, float]] = []   # (product, category, price)
    price: dict[str, float] = {}
    stock: dict[str, bool] = {}
    newest = None
    seen = 0
    for item in items:
        yield item
        if not isinstance(item, BehaviourEvent):
            continue
        newest = item.occurred_at if newest is None else max(newest, item.occurred_at)
        p = item.product
        if cfg.every <= 0 or p is None or item.event_type not in (PRODUCT_VIEW, ADD_TO_CART):
            continue
        recent.append((p.product_id, p.category, p.price or 10.0))
        del recent[:-cfg.recent]
        seen += 1
        if seen % cfg.every:
            continue
        pid, category, listed = rng.choice(recent)
        old = price.get(pid, listed)
        seq = f"chg-{cfg.seed}-{seen}"
        counts["catalog_changes"] += 1
        if rng.random() < cfg.hostile_ratio:
            counts["catalog_hostile"] += 1
            yield CatalogChange(seq, pid, newest, -old, None, category)
            continue
        first = pid not in stock
        roll = rng.random()
        new_price: float | None = None
        in_stock: bool | None = True if first else None
        if stock.get(pid) is False:
            in_stock = True                                  # a restock
        elif roll < 0.45:
            new_price = round(old * (1 - rng.uniform(0.15, 0.40)), 2)
        elif roll < 0.7:
            new_price = round(old * (1 + rng.uniform(0.05, 0.20)), 2)
        else:
            in_stock = False                                 # a stock out
        if new_price is not None:
            price[pid] = new_price
        elif first:
            new_price = old                                  # state the price it starts from
            price[pid] = old
        if in_stock is not None:
            stock[pid] = in_stock
        yield CatalogChange(seq, pid, newest, new_price, in_stock, category)


def change_record(change: CatalogChange, confluent: bool = False) -> tuple[str, str, bytes]:
    """(catalog_changes, key, Avro value) as sent to Kafka: keyed by product."""
    body = encode_change(change)
    value = confluent_frame(CHANGE_SCHEMA_ID, body) if confluent else body
    return CHANGES, change.product_id, value
