"""The feature store and the catalog on the real local redis-server."""

from __future__ import annotations

import time

import pytest

from pipelines.feature_store import AS_OF, LAST_TRIGGER, FeatureStoreWriter, RedisFeatureStore
from pipelines.redis_catalog import RedisCatalog, load_catalog, open_catalog
from runners import SHIPPED_DATA as REES46
from runners.cli import main
from tests.builders import MINUTE, T0
from transforms.catalog import CatalogItem, read_catalog_jsonl
from transforms.model import CONSENT, ERASE, FEATURES, ConsentState, FeatureSnapshot
from transforms.settings import DAY, Settings

pytestmark = pytest.mark.integration


def snap(cid: str, as_of: int, views: int, last: str | None = None) -> FeatureSnapshot:
    features = {"views_1h": views, "revenue_30d": 99.5, "last_activity_at": as_of}
    return FeatureSnapshot(cid, as_of, features, 42.25, last)


def store_for(settings: Settings, prefix: str, **kw) -> RedisFeatureStore:
    return RedisFeatureStore(
        settings.redis, key_prefix=prefix, feature_ttl_ms=DAY, tombstone_ttl_ms=DAY, **kw
    )


def test_features_are_written_as_a_hash_with_a_ttl(redis_client, service_settings, prefix):
    store = store_for(service_settings, prefix)
    store.write(snap("c1", T0, 3, "browse_intensity"))
    store.flush()
    key = f"{prefix}customer:c1"
    raw = redis_client.hgetall(key)
    assert raw[b"views_1h"] == b"3"
    assert raw[b"as_of"] == str(T0).encode()
    assert raw[b"last_trigger"] == b"browse_intensity"
    assert 0 < redis_client.pttl(key) <= DAY
    assert store.read("c1") == {
        "views_1h": 3,
        "revenue_30d": 99.5,
        "last_activity_at": T0,
        "engagement_score": 42.25,
        AS_OF: T0,
        LAST_TRIGGER: "browse_intensity",
    }
    store.close()


def test_an_older_snapshot_is_ignored_even_in_one_pipeline(service_settings, prefix):
    store = store_for(service_settings, prefix, batch_size=100, max_delay_ms=60_000)
    store.write(snap("c1", T0 + MINUTE, 7))
    store.write(snap("c1", T0, 1))  # a retry of an older one, same batch
    assert store.read("c1") is None  # nothing sent before the flush
    store.flush()
    assert store.read("c1")["views_1h"] == 7
    assert (store.written, store.ignored) == (1, 1)
    store.write(snap("c1", T0 + 2 * MINUTE, 9))
    store.flush()
    assert store.read("c1")["views_1h"] == 9
    store.close()


def test_batches_are_sent_when_full(service_settings, prefix):
    store = store_for(service_settings, prefix, batch_size=2, max_delay_ms=60_000)
    store.write(snap("c1", T0, 1))
    assert store.read("c1") is None
    store.write(snap("c2", T0, 2))
    assert store.read("c1") is not None and store.read("c2") is not None
    store.close()


def test_a_lone_write_is_sent_after_max_delay(service_settings, prefix):
    store = store_for(service_settings, prefix, batch_size=100, max_delay_ms=50)
    store.write(snap("c1", T0, 4))
    deadline = time.monotonic() + 5.0
    while store.read("c1") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.read("c1")["views_1h"] == 4
    assert store.written == 1
    store.close()


def test_erasure_removes_every_key_of_the_customer_and_only_theirs(
    redis_client, service_settings, prefix
):
    store = store_for(service_settings, prefix)
    writer = FeatureStoreWriter(store)
    for cid in ("c1", "c1:x", "c10"):
        writer.write((FEATURES, snap(cid, T0, 1)))
    writer.flush()
    redis_client.set(f"{prefix}customer:c1:consents", b"x")  # something else of c1's
    writer.write((FEATURES, snap("c1", T0 + MINUTE, 2)))  # queued, then erased
    writer.write((ERASE, "c1"))
    writer.write((FEATURES, snap("c1", T0 + 2 * MINUTE, 3)))  # after erasure: ignored
    writer.close()
    left = sorted(k.decode() for k in redis_client.scan_iter(match=prefix + "*"))
    assert left == sorted(
        [f"{prefix}customer:c10", f"{prefix}customer:c1%3Ax", f"{prefix}erased:c1"]
    )
    assert 0 < redis_client.pttl(f"{prefix}erased:c1") <= DAY


def test_catalog_derive_load_and_read_back(redis_client, service_settings, prefix, tmp_path):
    out = tmp_path / "catalog.jsonl"
    assert main(["catalog", "derive", "--input", str(REES46), "--out", str(out)]) == 0
    items = read_catalog_jsonl(out)
    assert len(items) > 1000
    assert (
        main(["catalog", "load", "--input", str(out), "--set", f"redis.key_prefix={prefix}"]) == 0
    )
    stored = sum(1 for _ in redis_client.scan_iter(match=f"{prefix}product:*", count=1000))
    assert stored == len(items)

    catalog = RedisCatalog(service_settings.redis, key_prefix=prefix)
    sample = items[:50]
    got = catalog.get_many([i.product_id for i in sample] + ["no-such-product"])
    assert got == {i.product_id: i for i in sample}
    assert catalog.get("no-such-product") is None
    assert catalog.calls == 2  # one round trip per call


def test_cached_catalog_reads_redis_once_per_product(redis_client, service_settings, prefix):
    items = [
        CatalogItem("p1", "Shoe", "shoes", "acme", 19.99, "https://x.invalid/p1", None),
        CatalogItem("p2", None, None, None, None, None, None),
    ]
    assert load_catalog(redis_client, items, prefix) == 2
    settings = service_settings.with_overrides([f"redis.key_prefix={prefix}"])
    cached = open_catalog(settings)
    assert cached.get_many(["p1", "p2", "p3"]) == {"p1": items[0], "p2": items[1]}
    assert cached.get_many(["p1", "p3"]) == {"p1": items[0]}
    assert cached.inner.calls == 1
    assert (cached.hits, cached.misses) == (2, 3)


def test_consent_is_written_at_once_newest_wins_and_erasure_removes_it(
    redis_client, service_settings, prefix
):
    store = store_for(service_settings, prefix, batch_size=100, max_delay_ms=60_000)
    writer = FeatureStoreWriter(store)
    writer.write((CONSENT, ConsentState("c1", False, T0 + MINUTE)))
    # No flush, no timer: a consent change is sent before write() returns.
    assert redis_client.get(f"{prefix}customer:c1:consent") == f"0:{T0 + MINUTE}".encode()
    assert 0 < redis_client.pttl(f"{prefix}customer:c1:consent") <= DAY
    writer.write((CONSENT, ConsentState("c1", True, T0)))  # older: ignored
    assert store.read_consent("c1") == ConsentState("c1", False, T0 + MINUTE)
    writer.write((CONSENT, ConsentState("c1", True, T0 + 2 * MINUTE)))
    assert store.read_consent("c1") == ConsentState("c1", True, T0 + 2 * MINUTE)
    writer.write((ERASE, "c1"))
    writer.write((CONSENT, ConsentState("c1", True, T0 + 3 * MINUTE)))  # erased: ignored
    assert store.read_consent("c1") is None
    writer.close()
