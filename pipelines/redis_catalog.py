"""The product catalog in Redis: what `personalize catalog load` writes and rendering reads.

    <prefix>product:<id>   hash: name, category, brand, price, url, image_url
                           (a field whose value is unknown is absent; no TTL: it is reference
                           data, replaced by the next load)

    load_catalog(client, items, prefix) -> count         pipelined, in batches
    RedisCatalog(...).get / get_many                     the Catalog protocol (one round trip
                                                         per get_many, HMGET per product)
    open_catalog(settings) -> Catalog                    RedisCatalog behind CachedCatalog

An unknown product is None / absent, never an error: the core then falls back to what the
stream said about the product, and the renderer to the trigger's fallback content.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pipelines.connections import redis_client
from transforms.catalog import CachedCatalog, CatalogItem
from transforms.settings import RedisSettings, Settings

if TYPE_CHECKING:
    import redis

FIELDS = ("name", "category", "brand", "price", "url", "image_url")


def product_key(prefix: str, product_id: str) -> str:
    """The hash of one product."""
    return f"{prefix}product:{product_id}"


def item_fields(item: CatalogItem) -> dict[str, str]:
    """The hash fields of an item (None values left out; price as a decimal string)."""
    values = (item.name, item.category, item.brand, item.price, item.url, item.image_url)
    return {
        name: repr(value) if isinstance(value, float) else str(value)
        for name, value in zip(FIELDS, values, strict=True)
        if value is not None
    }


def load_catalog(
    client: redis.Redis, items: Iterable[CatalogItem], prefix: str, batch_size: int = 1000
) -> int:
    """Replace each item's hash (DEL + HSET, so a field gone from the file goes from Redis too),
    pipelined `batch_size` items per round trip; returns the number of items written."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for item in items:
        key = product_key(prefix, item.product_id)
        pipe.delete(key)
        pipe.hset(key, mapping=item_fields(item) or {"name": ""})
        count += 1
        if count % batch_size == 0:
            pipe.execute()
    pipe.execute()
    return count


class RedisCatalog:
    """The Catalog protocol over the product hashes. Picklable: connects on first use."""

    def __init__(
        self,
        server: RedisSettings | None = None,
        *,
        key_prefix: str = "personalize:",
    ) -> None:
        self.server = server or RedisSettings()
        self.prefix = key_prefix
        self._client: redis.Redis | None = None
        self.calls = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisCatalog:
        """The catalog on settings.redis."""
        r = settings.redis
        return cls(r, key_prefix=r.key_prefix)

    def get(self, product_id: str) -> CatalogItem | None:
        """The product, or None."""
        return self.get_many([product_id]).get(product_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, CatalogItem]:
        """The known products among `ids`, in one round trip."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        pipe = self._connect().pipeline(transaction=False)
        for pid in wanted:
            pipe.hmget(product_key(self.prefix, pid), list(FIELDS))
        self.calls += 1
        found = {}
        for pid, values in zip(wanted, pipe.execute(), strict=True):
            item = _item(pid, values)
            if item is not None:
                found[pid] = item
        return found

    def close(self) -> None:
        """Drop the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connect(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.server)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def open_catalog(
    settings: Settings, max_items: int = 10_000, ttl_seconds: float | None = 300.0
) -> CachedCatalog:
    """The Redis catalog behind a small local LRU (misses cached too), for the Kafka runs."""
    return CachedCatalog(RedisCatalog.from_settings(settings), max_items, ttl_seconds=ttl_seconds)


def _item(product_id: str, values: list[bytes | None]) -> CatalogItem | None:
    """A CatalogItem from HMGET values; None when the product has no hash at all."""
    if all(v is None for v in values):
        return None
    text = [None if v is None else v.decode("utf-8") for v in values]
    fields = dict(zip(FIELDS, text, strict=True))
    price: float | None = None
    if fields["price"]:
        try:
            price = float(fields["price"])
        except ValueError:
            price = None  # a hand-edited hash: show the product without a price
    return CatalogItem(
        product_id=product_id,
        name=fields["name"] or None,
        category=fields["category"],
        brand=fields["brand"],
        price=price,
        url=fields["url"],
        image_url=fields["image_url"],
    )
