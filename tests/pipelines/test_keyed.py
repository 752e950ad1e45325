"""The keyed mechanics every runner shares (pipelines/keyed.py): one timer at the earliest
wake, the cache of live states, dropped counts."""

from __future__ import annotations

from pipelines.keyed import StateCache, add_counts, next_timer
from tests.builders import HOUR, MINUTE, T0

ALIVE = object()          # any live state


def test_a_step_keeps_the_earlier_of_the_timer_held_and_the_core_s_wakes():
    assert next_timer(None, ALIVE, [T0 + HOUR, T0 + MINUTE]) == T0 + MINUTE
    assert next_timer(T0, ALIVE, [T0 + MINUTE]) == T0                # held is earlier: kept
    assert next_timer(T0 + HOUR, ALIVE, [T0 + MINUTE]) == T0 + MINUTE
    assert next_timer(T0, ALIVE, []) == T0                           # nothing asked: kept


def test_after_a_wake_the_core_s_wakes_are_all_it_waits_for():
    # The timer that fired is not held any more: a later wake replaces it.
    assert next_timer(T0, ALIVE, [T0 + HOUR], woke=True) == T0 + HOUR
    assert next_timer(T0, ALIVE, [], woke=True) is None


def test_a_cleared_state_holds_no_timer():
    assert next_timer(T0, None, [T0 + MINUTE]) is None
    assert next_timer(None, None, []) is None


def test_the_cache_returns_only_entries_the_check_accepts_and_takes_them_out():
    cache: StateCache[tuple[str, bytes]] = StateCache(2, lambda entry, raw: entry[1] is raw)
    raw = b"x" * 10
    cache.put("a", ("state-a", raw))
    assert cache.take("a", b"y") is None                # stale: the engine holds other bytes
    assert cache.take("a", raw) is None                 # taken out by the read before
    cache.put("a", ("state-a", raw))
    assert cache.take("a", raw) == ("state-a", raw)
    assert len(cache) == 0                              # the core changes states in place


def test_the_cache_drops_the_least_recently_stored_past_its_limit_and_zero_disables_it():
    cache: StateCache[tuple[str]] = StateCache(2, lambda entry, _: True)
    for key in "abc":
        cache.put(key, (key,))
    assert cache.take("a") is None and cache.take("b") == ("b",) and cache.take("c") == ("c",)
    off: StateCache[tuple[str]] = StateCache(0, lambda entry, _: True)
    off.put("a", ("a",))
    assert off.take("a") is None and len(off) == 0


def test_dropped_counts_add_up_by_reason():
    total: dict[str, int] = {}
    add_counts(total, {"duplicate": 2})
    add_counts(total, {"duplicate": 1, "erased": 1})
    assert total == {"duplicate": 3, "erased": 1}
    prefixed: dict[str, int] = {}
    add_counts(prefixed, {"duplicate": 1}, "dropped:")
    assert prefixed == {"dropped:duplicate": 1}
