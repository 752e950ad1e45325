"""Product catalog: what rendering and recommendations need to show a product.

    Catalog.get(product_id) -> CatalogItem | None      (None: unknown product, never an error)
    Catalog.get_many(ids)   -> {product_id: CatalogItem} (unknown ids are simply absent)

Implementations: `InMemoryCatalog` (tests, replays), `CachedCatalog` (a small LRU in front of a
remote one: the Redis catalog wraps itself in it). `catalog_from_events` derives a catalog from
clickstream events, for data that comes without one (the shipped rees46 sample), and
`write_catalog_jsonl` / `read_catalog_jsonl` keep it in a file, one JSON object per line.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from transforms.model import BehaviourEvent

DEFAULT_SHOP_URL = "https://shop.example.invalid"
_DERIVED = ("category", "brand", "price")


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One product as shown in an email; only the id is required."""

    product_id: str
    name: str | None = None     # None: not known (render derives one with `product_name`)
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    url: str | None = None
    image_url: str | None = None


class Catalog(Protocol):
    """Read access to product data by id."""

    def get(self, product_id: str) -> CatalogItem | None:
        """The product, or None when the catalog does not know it."""
        ...

    def get_many(self, ids: Iterable[str]) -> dict[str, CatalogItem]:
        """The known products among `ids`, by id (unknown ids are absent)."""
        ...


class InMemoryCatalog:
    """A catalog held in a dict."""

    def __init__(self, items: Iterable[CatalogItem] = ()) -> None:
        self._items = {item.product_id: item for item in items}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, product_id: str) -> CatalogItem | None:
        """The product, or None."""
        return self._items.get(product_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, CatalogItem]:
        """The known products among `ids`."""
        return {pid: self._items[pid] for pid in ids if pid in self._items}


class CachedCatalog:
    """An LRU cache of at most `max_items` lookups (misses included) in front of `inner`.

    Entries older than `ttl_seconds` (by `clock`, wall-clock seconds) are fetched again, so
    price changes and late-loaded products show up; None keeps them for the process lifetime.
    Misses are cached too, so an unknown product does not cost a remote call per email.
    Thread-safe: PyFlink may call it from several threads.
    """

    def __init__(
        self,
        inner: Catalog,
        max_items: int = 10_000,
        *,
        ttl_seconds: float | None = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_items <= 0:
            raise ValueError("max_items must be positive")
        self.inner = inner
        self.max_items = max_items
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CatalogItem | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, product_id: str) -> CatalogItem | None:
        """The product, from the cache when fresh, else from `inner`."""
        return self.get_many([product_id]).get(product_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, CatalogItem]:
        """The known products among `ids`; the stale or uncached ones in one `inner` call."""
        now = self._clock()
        ttl = math.inf if self.ttl_seconds is None else self.ttl_seconds
        found: dict[str, CatalogItem] = {}
        wanted: list[str] = []
        with self._lock:
            for pid in dict.fromkeys(ids):
                entry = self._entries.get(pid)
                if entry is not None and now - entry[0] < ttl:
                    self._entries.move_to_end(pid)
                    self.hits += 1
                    if entry[1] is not None:
                        found[pid] = entry[1]
                else:
                    self.misses += 1
                    wanted.append(pid)
        if not wanted:
            return found
        fetched = self.inner.get_many(wanted)  # outside the lock: it may be a network call
        with self._lock:
            for pid in wanted:
                self._entries[pid] = (now, fetched.get(pid))
                self._entries.move_to_end(pid)
            while len(self._entries) > self.max_items:
                self._entries.popitem(last=False)
        found.update(fetched)
        return found


def product_name(product_id: str, brand: str | None, category: str | None) -> str:
    """A readable stand-in name: "Lenovo notebook", "Water heater", "Product 1307067".

    The leaf of a dotted category code ("computers.notebook" -> "notebook") names the kind of
    product; a numeric category id names nothing and is left out.
    """
    leaf = (category or "").rsplit(".", 1)[-1].replace("_", " ").strip()
    if leaf.isdigit():
        leaf = ""
    brand = (brand or "").strip()
    if brand and leaf:
        return f"{brand.title()} {leaf}"
    if brand or leaf:
        return (brand.title() if brand else leaf.capitalize()) + ("" if leaf else f" {product_id}")
    return f"Product {product_id}"


def catalog_from_events(
    events: Iterable[Any], shop_url: str = DEFAULT_SHOP_URL
) -> list[CatalogItem]:
    """One item per product seen in `events`, sorted by product_id.

    Each field takes its latest known value in event time (ties by event_id): the latest
    price, brand and category, a field left empty by a later event keeps the earlier value.
    URLs are synthetic: <shop_url>/p/<id> and <shop_url>/img/<id>.jpg. Non-events are skipped.
    """
    known: dict[str, dict[str, tuple[tuple[int, str], Any]]] = {}
    for e in events:
        if not isinstance(e, BehaviourEvent) or e.product is None:
            continue
        p, when = e.product, (e.occurred_at, e.event_id)
        price = p.price if p.price is not None and math.isfinite(p.price) and p.price >= 0 else None
        slot = known.setdefault(p.product_id, {})
        for name, value in zip(_DERIVED, (p.category, p.brand, price), strict=True):
            if value is not None and value != "" and (name not in slot or when >= slot[name][0]):
                slot[name] = (when, value)
    base = shop_url.rstrip("/")
    items = []
    for pid, slot in sorted(known.items()):
        category, brand, price = (slot[n][1] if n in slot else None for n in _DERIVED)
        items.append(CatalogItem(
            product_id=pid,
            name=product_name(pid, brand, category),
            category=category,
            brand=brand,
            price=price,
            url=f"{base}/p/{pid}",
            image_url=f"{base}/img/{pid}.jpg",
        ))
    return items


def write_catalog_jsonl(items: Iterable[CatalogItem], path: str | Path) -> int:
    """Write one JSON object per line; returns the number of items written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(asdict(item), ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


def read_catalog_jsonl(path: str | Path) -> list[CatalogItem]:
    """Read a file written by `write_catalog_jsonl`; raises ValueError naming the bad line."""
    items = []
    with Path(path).open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                items.append(_item_from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{line_no}: not a catalog item: {exc}") from exc
    return items


def _item_from_json(obj: Any) -> CatalogItem:
    if not isinstance(obj, dict):
        raise TypeError("expected a JSON object")
    pid, name = obj["product_id"], obj.get("name")
    if not isinstance(pid, str) or not pid:
        raise ValueError("product_id must be a non-empty string")
    if name is not None and not isinstance(name, str):
        raise TypeError("name must be a string or null")
    price = obj.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)):
        raise TypeError("price must be a number or null")
    text = {k: obj.get(k) for k in ("category", "brand", "url", "image_url")}
    for k, v in text.items():
        if v is not None and not isinstance(v, str):
            raise TypeError(f"{k} must be a string or null")
    return CatalogItem(
        product_id=pid, name=name, price=None if price is None else float(price), **text
    )
