"""Helpers for building the output payload (Avro `PersonalizedEmail`).

`message_id` is the idempotency key of a payload (DESIGN.md section 4, "Dedup / idempotency"):
a replay or a redelivery of the same input fires the same trigger at the same event time, so it
yields the same id, and the sink and the ESP connector can drop repeats.
"""

from __future__ import annotations

import hashlib
import json


def message_id(customer_id: str, trigger_type: str, key: str, fired_at: int) -> str:
    """32 hex chars: SHA-256 of the canonical JSON of (customer, type, key, fired_at ms).

    Derived from those four only. JSON escaping keeps the canonical form unambiguous whatever
    the strings hold (no separator can be forged from inside a field).
    """
    canonical = json.dumps(
        [customer_id, trigger_type, key, int(fired_at)], ensure_ascii=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]
