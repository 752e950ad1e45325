import json
from collections.abc import Iterable

import pytest

from tests.builders import HOUR, T0
from transforms.catalog import (
    CachedCatalog,
    CatalogItem,
    InMemoryCatalog,
    catalog_from_events,
    product_name,
    read_catalog_jsonl,
    write_catalog_jsonl,
)
from transforms.model import PRODUCT_VIEW, BehaviourEvent, CustomerProfile, Product

SHOE = CatalogItem("p1", "Acme shoe", "apparel.shoes", "acme", 50.0,
                   "https://shop.example.invalid/p/p1", "https://shop.example.invalid/img/p1.jpg")
HAT = CatalogItem("p2", "Acme hat", "apparel.hat", "acme", 20.0)


def ev(t: int, pid: str, category: str | None, brand: str | None, price: float | None,
       eid: str | None = None) -> BehaviourEvent:
    return BehaviourEvent(event_id=eid or f"e{t}-{pid}", customer_id="c1",
                          event_type=PRODUCT_VIEW, occurred_at=t,
                          product=Product(pid, category, brand, price))


class CountingCatalog(InMemoryCatalog):
    def __init__(self, items: Iterable[CatalogItem]) -> None:
        super().__init__(items)
        self.calls: list[list[str]] = []

    def get_many(self, ids: Iterable[str]) -> dict[str, CatalogItem]:
        ids = list(ids)
        self.calls.append(ids)
        return super().get_many(ids)


def test_in_memory_catalog_returns_none_or_omits_unknown_products():
    cat = InMemoryCatalog([SHOE, HAT])
    assert cat.get("p1") == SHOE and cat.get("nope") is None
    assert cat.get_many(["p2", "nope", "p1"]) == {"p2": HAT, "p1": SHOE}


def test_cache_serves_repeats_and_misses_from_memory_in_one_inner_call():
    inner = CountingCatalog([SHOE, HAT])
    cache = CachedCatalog(inner, max_items=10)
    assert cache.get_many(["p1", "nope"]) == {"p1": SHOE}
    assert cache.get_many(["p1", "nope"]) == {"p1": SHOE}
    assert cache.get("p2") == HAT
    assert inner.calls == [["p1", "nope"], ["p2"]]
    assert (cache.hits, cache.misses) == (2, 3)


def test_cache_evicts_least_recently_used_beyond_max_items():
    inner = CountingCatalog([SHOE, HAT, CatalogItem("p3", "x")])
    cache = CachedCatalog(inner, max_items=2)
    cache.get("p1")
    cache.get("p2")
    cache.get("p1")            # p1 is now the most recent
    cache.get("p3")            # evicts p2
    assert len(cache) == 2
    inner.calls.clear()
    cache.get("p1")
    cache.get("p2")
    assert inner.calls == [["p2"]]


def test_cache_refetches_entries_older_than_the_ttl():
    now = [0.0]
    inner = CountingCatalog([SHOE])
    cache = CachedCatalog(inner, ttl_seconds=60, clock=lambda: now[0])
    cache.get("p1")
    now[0] = 59.0
    cache.get("p1")
    now[0] = 60.0
    cache.get("p1")
    assert len(inner.calls) == 2


def test_product_names_from_brand_and_category_leaf():
    assert product_name("1", "lenovo", "computers.notebook") == "Lenovo notebook"
    assert product_name("1", None, "appliances.environment.water_heater") == "Water heater"
    assert product_name("1", "shiseido", "2103807459595387724") == "Shiseido 1"
    assert product_name("1307067", None, None) == "Product 1307067"


def test_catalog_from_events_keeps_the_latest_known_value_of_each_field():
    events = [
        ev(T0 + HOUR, "p1", "computers.notebook", None, 240.0),     # newer price, no brand
        ev(T0, "p1", "computers.notebook", "lenovo", 251.74),
        ev(T0, "p2", "2103807459595387724", "", -1.0),                # bad price, empty brand
        CustomerProfile("c1", T0),                                    # not an event: skipped
    ]
    items = catalog_from_events(events)
    assert items == [
        CatalogItem("p1", "Lenovo notebook", "computers.notebook", "lenovo", 240.0,
                    "https://shop.example.invalid/p/p1", "https://shop.example.invalid/img/p1.jpg"),
        CatalogItem("p2", "Product p2", "2103807459595387724", None, None,
                    "https://shop.example.invalid/p/p2", "https://shop.example.invalid/img/p2.jpg"),
    ]
    assert catalog_from_events(reversed(events)) == items        # arrival order does not matter


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "catalog.jsonl"
    items = [SHOE, HAT, CatalogItem("p3")]
    assert write_catalog_jsonl(items, path) == 3
    assert read_catalog_jsonl(path) == items


@pytest.mark.parametrize("line", [
    "not json", "[1, 2]", '{"name": "no id"}', '{"product_id": "p", "price": "12"}',
    '{"product_id": "p", "price": true}', '{"product_id": "p", "url": 5}',
])
def test_a_bad_catalog_line_is_reported_with_its_number(tmp_path, line):
    path = tmp_path / "catalog.jsonl"
    path.write_text(json.dumps({"product_id": "ok", "name": "fine"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"catalog.jsonl:2: "):
        read_catalog_jsonl(path)
