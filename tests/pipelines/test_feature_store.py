"""The feature-store writer and the in-memory store; the core's FEATURES/ERASE outputs in them."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from pipelines.feature_store import (
    AS_OF,
    ENGAGEMENT_SCORE,
    LAST_TRIGGER,
    FeatureStoreWriter,
    RedisFeatureStore,
    _decode,
    _encode,
    key_id,
    snapshot_fields,
)
from pipelines.wire import route
from tests.builders import (
    CART_DELAY,
    HOUR,
    MINUTE,
    SECOND,
    T0,
    add,
    consent,
    erasure,
    profile,
    view,
)
from tests.feature_stores import InMemoryFeatureStore
from tests.transforms.drive import drive
from transforms.core import Core
from transforms.model import CONSENT, ERASE, FEATURES, ConsentState, FeatureSnapshot
from transforms.settings import CoreSettings


def snap(
    cid: str = "c1", as_of: int = T0, views: int = 1, last: str | None = None
) -> FeatureSnapshot:
    return FeatureSnapshot(cid, as_of, {"views_1h": views, "last_activity_at": None}, 12.5, last)


def test_snapshot_fields_flattens_and_leaves_out_unknown_values():
    assert snapshot_fields(snap(views=3)) == {"views_1h": 3, AS_OF: T0, ENGAGEMENT_SCORE: 12.5}
    assert snapshot_fields(snap(last="cart_abandonment"))[LAST_TRIGGER] == "cart_abandonment"


def test_writer_routes_snapshots_and_erasures_to_the_store():
    store = InMemoryFeatureStore()
    writer = FeatureStoreWriter(store)
    writer.write((FEATURES, snap("c1")))
    writer.write((FEATURES, snap("c2")))
    writer.write((ERASE, "c2"))
    writer.close()
    assert store.read("c1") == snapshot_fields(snap("c1"))
    assert store.read("c2") is None
    assert (writer.snapshots, writer.erasures, store.flushes) == (2, 1, 1)


def test_writer_refuses_other_records():
    with pytest.raises(ValueError, match="not a feature-store record"):
        FeatureStoreWriter(InMemoryFeatureStore()).write(("payload", object()))


def test_an_older_snapshot_never_overwrites_a_newer_one():
    store = InMemoryFeatureStore()
    store.write(snap(as_of=T0 + MINUTE, views=5))
    store.write(snap(as_of=T0, views=1))
    assert store.read("c1")["views_1h"] == 5
    store.write(snap(as_of=T0 + MINUTE, views=6))  # same instant: the later word wins
    assert store.read("c1")["views_1h"] == 6


def test_an_erased_customer_is_not_written_again():
    store = InMemoryFeatureStore()
    store.write(snap(as_of=T0))
    store.erase("c1")
    store.write(snap(as_of=T0 + MINUTE))
    assert store.read("c1") is None


def test_core_outputs_through_the_writer_then_erasure_clears_the_customer():
    """The core's own FEATURES and ERASE outputs, routed as the engines route them."""
    core = Core(CoreSettings())
    store = InMemoryFeatureStore()
    writer = FeatureStoreWriter(store)
    items = [profile(), view(T0), add(T0 + MINUTE)]
    state, outputs = drive(core, items, T0 + CART_DELAY + 2 * MINUTE)
    routed, _ = route(outputs, lambda payload: payload)  # drive() composed them
    for sink, record in routed:
        if sink == FEATURES:
            writer.write(record)
    writer.flush()
    row = store.read("c1")
    assert row is not None
    assert row[LAST_TRIGGER] == "cart_abandonment"
    assert row["cart_adds_24h"] == 1
    assert row[AS_OF] == T0 + MINUTE + CART_DELAY

    state, outputs = drive(
        core, [erasure(T0 + CART_DELAY + 3 * MINUTE)], T0 + CART_DELAY + 4 * MINUTE, state
    )
    routed, _ = route(outputs, lambda payload: payload)  # drive() composed them
    erasures = [record for sink, record in routed if sink == FEATURES]
    assert erasures == [(ERASE, "c1")]
    for record in erasures:
        writer.write(record)
    assert store.read("c1") is None


def test_key_ids_cannot_collide_across_customers():
    assert key_id("12") == "12"
    assert key_id("12:x") == "12%3Ax"
    assert key_id("12%3Ax") == "12%253Ax"


def test_redis_store_pickles_without_its_connection():
    store = RedisFeatureStore(feature_ttl_ms=1000, tombstone_ttl_ms=1000, key_prefix="t:")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.customer_key("a:b") == "t:customer:a%3Ab"
    assert copy._client is None


def test_consent_changes_are_routed_to_the_feature_store_and_kept_newest_first():
    """A late unsubscribe, routed as both engines route it (wire.route), reaches the store."""
    core = Core(CoreSettings())
    state, outputs = drive(core, [profile(), add(T0)], T0 + MINUTE)
    state, late, _ = core.step(state, consent(T0 + 30 * SECOND, False), watermark=T0 + MINUTE)
    routed, _ = route(outputs + late, lambda payload: payload)
    consents = [record for sink, record in routed if sink == FEATURES and record[0] == CONSENT]
    assert consents == [
        (CONSENT, ConsentState("c1", True, T0 - HOUR)),
        (CONSENT, ConsentState("c1", False, T0 + 30 * SECOND)),
    ]
    store = InMemoryFeatureStore()
    writer = FeatureStoreWriter(store)
    for record in reversed(consents):  # out of order: the newest still wins
        writer.write(record)
    assert store.read_consent("c1") == ConsentState("c1", False, T0 + 30 * SECOND)
    assert writer.consents == 2 and store.flushes == 2  # each one made durable at once
    store.erase("c1")
    writer.write((CONSENT, ConsentState("c1", True, T0 + HOUR)))
    assert store.read_consent("c1") is None


def test_the_segment_reaches_the_feature_store_and_reads_back_typed():
    """Segment fields of the core's snapshots (transforms/segments.py), as stored per customer;
    strings stay strings even when they look like numbers (a CRM stage "2")."""
    core = Core(CoreSettings())
    store = InMemoryFeatureStore()
    writer = FeatureStoreWriter(store)
    crm = dataclasses.replace(profile(), lifecycle_stage="2")
    _, outputs = drive(core, [crm, view(T0), add(T0 + MINUTE)], T0 + CART_DELAY + 2 * MINUTE)
    routed, _ = route(outputs, lambda payload: payload)
    for sink, record in routed:
        if sink == FEATURES:
            writer.write(record)
    row = store.read("c1")
    assert row is not None
    assert (row["rfm_r"], row["rfm_f"], row["lifecycle"], row["crm_stage"]) == (5, 1, "new", "2")
    assert row["engagement_tier"] in ("low", "medium", "high") and "cluster" not in row
    segment = {k: row[k] for k in ("rfm_r", "rfm_f", "rfm_m", "lifecycle", "engagement_tier",
                                   "crm_stage")}
    decoded = {k: _decode(k, _encode(v)) for k, v in segment.items()}  # as Redis returns them
    assert decoded == segment and decoded["crm_stage"] == "2" and decoded["rfm_m"] == 1
