"""Size caps of per-customer state (DESIGN.md section 8): the oldest entries go first, counted.

Each capped part of the state (see the table in transforms/state.py) is trimmed where it grows;
every entry evicted is one DROPPED output with reason `evicted:<part>`, counted by the adapters
like duplicates. Over its cap, a part is trimmed to cap - cap // 16: CPython finds a dict's
first entry by skipping the slots of deleted ones, so evicting one entry per insertion would
cost O(cap) each time; in batches it is O(1) per insertion.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import islice
from typing import Any, Final

EVICTED_DEDUP: Final = "evicted:dedup"
EVICTED_PENDING: Final = "evicted:pending"  # processed before the watermark reached it
EVICTED_SESSIONS: Final = "evicted:sessions"
EVICTED_CATEGORIES: Final = "evicted:categories"
EVICTED_CART: Final = "evicted:cart"
EVICTED_PURCHASED: Final = "evicted:purchased"
EVICTED_BROWSE_VIEWS: Final = "evicted:browse_views"
EVICTED_BROWSE_CATEGORIES: Final = "evicted:browse_categories"


def evict(entries: dict[Any, Any], cap: int, age: Callable[[Any], Any] | None = None) -> int:
    """Trim `entries` to cap - cap // 16 once it holds more than `cap`; how many went.

    The oldest go first: the first inserted, or with `age` (key -> a sortable age) the keys of
    smallest age (ties in insertion order).
    """
    n = len(entries) - cap
    if n <= 0:
        return 0
    n += cap // 16
    victims = list(islice(entries, n)) if age is None else heapq.nsmallest(n, entries, key=age)
    for key in victims:
        del entries[key]
    return n

