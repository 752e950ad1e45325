"""A FeatureStore in dicts for the unit tests of pipelines/feature_store.py (test-only: the
jobs write to RedisFeatureStore, which tests/integration/test_redis_store.py tests on Redis)."""

from __future__ import annotations

from typing import Any

from pipelines.feature_store import AS_OF, snapshot_fields
from transforms.model import ConsentState, FeatureSnapshot


class InMemoryFeatureStore:
    """A FeatureStore in dicts, for unit tests; same semantics as Redis, minus the TTL."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.consents: dict[str, ConsentState] = {}
        self.erased: set[str] = set()
        self.flushes = 0

    def write(self, snapshot: FeatureSnapshot) -> None:
        """Store the snapshot unless the stored one is newer or the customer was erased."""
        cid = snapshot.customer_id
        if cid in self.erased:
            return
        stored = self.rows.get(cid)
        if stored is not None and stored[AS_OF] > snapshot.as_of:
            return
        self.rows[cid] = snapshot_fields(snapshot)

    def erase(self, customer_id: str) -> None:
        """Forget the customer and ignore their later snapshots."""
        self.rows.pop(customer_id, None)
        self.consents.pop(customer_id, None)
        self.erased.add(customer_id)

    def write_consent(self, consent: ConsentState) -> None:
        """Keep the consent unless a newer one is kept or the customer was erased."""
        cid = consent.customer_id
        held = self.consents.get(cid)
        if cid not in self.erased and (held is None or held.as_of <= consent.as_of):
            self.consents[cid] = consent
        self.flush()

    def read_consent(self, customer_id: str) -> ConsentState | None:
        """The kept consent, or None."""
        return self.consents.get(customer_id)

    def read(self, customer_id: str) -> dict[str, Any] | None:
        """A copy of the stored fields, or None."""
        row = self.rows.get(customer_id)
        return dict(row) if row is not None else None

    def flush(self) -> None:
        """Nothing is buffered; counted so tests can see the writer flush."""
        self.flushes += 1
