"""The keyed mechanics every runner shares, free of any engine.

    next_timer(held, state, wake_at, woke) -> the one timer a customer keeps, or None
    StateCache(limit, fresh)               live CustomerStates beside the engine's state
    add_counts(total, counts, prefix)      dropped items by reason, accumulated

The reference runner, Beam's PerCustomer and Flink's PerCustomer keep one event-time timer per
customer (Beam: per shard, the earliest of its customers'), at the earliest wake the core asked
for. A step adds wakes to the one held; after a wake the timer has fired and the core's
wake_at is all it still waits for. A cleared state (None) holds no timer. The adapters keep
only the engine's calls: reading and writing its state, setting and deleting its timers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

E = TypeVar("E", bound=tuple[Any, ...])


def next_timer(held: int | None, state: Any, wake_at: list[int], woke: bool = False) -> int | None:
    """The timer to keep after the core returned `state` and `wake_at`: `held` is the timer
    set before (ignored when `woke`: it has just fired)."""
    if state is None:
        return None
    if woke:
        held = None
    if not wake_at:
        return held
    first = min(wake_at)
    return first if held is None or first < held else held


class StateCache(Generic[E]):
    """Up to `limit` entries (tuples whose first field is a live CustomerState, the rest the
    engine's own), the least recently stored dropped first; `limit` 0 keeps none.

    The engine's state stays the truth: `take` hands an entry back only if `fresh(entry,
    held)` says it is still what the engine holds (`held`: what the engine gave as evidence,
    e.g. the bytes it holds now), and always takes it out, because the core changes a state
    in place: a retried or failed step finds no entry and reads the engine's state. A missing
    entry only costs a read of the engine's state.
    """

    def __init__(self, limit: int, fresh: Callable[[E, Any], bool]) -> None:
        self.limit = max(0, limit)
        self.fresh = fresh
        self.entries: dict[str, E] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def take(self, key: str, held: Any = None) -> E | None:
        """`key`'s entry if it is fresh, taken out of the cache either way."""
        entry = self.entries.pop(key, None)
        if entry is None or not self.fresh(entry, held):
            return None
        return entry

    def put(self, key: str, entry: E) -> None:
        """Keep `entry` for `key`, dropping the least recently stored past the limit."""
        if not self.limit:
            return
        entries = self.entries
        entries[key] = entry
        if len(entries) > self.limit:
            del entries[next(iter(entries))]


def add_counts(total: dict[str, int], counts: Mapping[str, int], prefix: str = "") -> None:
    """Add `counts` (dropped items by reason, from wire.route) into `total`, as prefix+reason."""
    for reason, n in counts.items():
        key = prefix + reason
        total[key] = total.get(key, 0) + n
