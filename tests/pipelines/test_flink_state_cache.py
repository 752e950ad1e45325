"""PerCustomer's cache of live CustomerState objects (pipelines/flink_operators.py), driven
without Flink: a fake ValueState and ListState that keep pickled bytes as Flink's do, fake
timers.

The cache must never change what the operator emits or what Flink's state holds: every write
goes to Flink's states (the whole state to the ValueState, or a buffered entry to the
ListState: state.step_change), and a new instance (a restore) or an entry past the state's TTL
reads them again and rebuilds the same state (state.rebuffer)."""

from __future__ import annotations

import pickle
from typing import Any

from pipelines.flink_operators import per_customer_fn
from tests.builders import HOUR, MINUTE, SECOND, T0, add, profile, view
from transforms.settings import Settings


class FakeValueState:
    def __init__(self) -> None:
        self.raw: bytes | None = None
        self.reads = 0

    def value(self) -> Any:
        self.reads += 1
        return None if self.raw is None else pickle.loads(self.raw)

    def update(self, value: Any) -> None:
        self.raw = pickle.dumps(value)

    def clear(self) -> None:
        self.raw = None


class FakeCounter:
    def inc(self, n: int = 1) -> None:
        pass


class FakeRuntime:
    def __init__(self, states: dict[str, FakeValueState],
                 lists: dict[str, list[bytes]] | None = None) -> None:
        self.states = states
        self.lists = {} if lists is None else lists
        self.key = ""

    def get_list_state(self, descriptor: Any) -> Any:
        runtime = self

        class Listed:                         # one ListState per current key, pickled entries
            def get(self) -> Any:
                yield from (pickle.loads(e) for e in runtime.lists.get(runtime.key, []))

            def add(self, value: Any) -> None:
                runtime.lists.setdefault(runtime.key, []).append(pickle.dumps(value))

            def clear(self) -> None:
                runtime.lists.pop(runtime.key, None)

        return Listed()

    def get_state(self, descriptor: Any) -> Any:
        runtime = self

        class Keyed:                          # one ValueState per current key, as Flink's
            def value(self) -> Any:
                return runtime.states.setdefault(runtime.key, FakeValueState()).value()

            def update(self, value: Any) -> None:
                runtime.states.setdefault(runtime.key, FakeValueState()).update(value)

            def clear(self) -> None:
                runtime.states.setdefault(runtime.key, FakeValueState()).clear()

        return Keyed()

    def get_metrics_group(self) -> Any:
        class Group:
            def counter(self, name: str) -> FakeCounter:
                return FakeCounter()

        return Group()


class FakeCtx:
    def __init__(self, runtime: FakeRuntime, timers: dict[str, set[int]], watermark: int):
        self.runtime, self.timers, self.watermark = runtime, timers, watermark

    def timer_service(self) -> Any:
        ctx = self

        class Timers:
            def register_event_time_timer(self, t: int) -> None:
                ctx.timers.setdefault(ctx.runtime.key, set()).add(t)

            def delete_event_time_timer(self, t: int) -> None:
                ctx.timers[ctx.runtime.key].discard(t)

            def current_watermark(self) -> int:
                return ctx.watermark

        return Timers()

    def get_current_key(self) -> str:
        return self.runtime.key


def _plain(obj: Any) -> Any:
    """A value as plain data, for comparing states and records by value: pickled bytes also
    differ with which equal objects are shared (one object referenced twice)."""
    if isinstance(obj, dict):
        return [(_plain(k), _plain(v)) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "deque":
        return [type(obj).__name__, *(_plain(v) for v in obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted(map(repr, obj))
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return obj
    if hasattr(obj, "__getstate__") and not isinstance(obj, type):
        state = obj.__getstate__()
        if state is not None:
            return [type(obj).__name__, _plain(state)]
    slots = [n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ())]
    fields = {n: getattr(obj, n) for n in slots if hasattr(obj, n)}
    fields.update(getattr(obj, "__dict__", {}))
    return [type(obj).__name__, _plain(fields)]


def _operator(settings: Settings, states: dict[str, FakeValueState],
              lists: dict[str, list[bytes]] | None = None) -> tuple[Any, FakeRuntime]:
    runtime = FakeRuntime(states, lists)
    op = per_customer_fn(settings, True, True)
    op.open(runtime)
    return op, runtime


def _drive(op: Any, runtime: FakeRuntime, items: list[Any], timers: dict[str, set[int]],
           end: int | None, lag: int = SECOND, watermark: int | None = None) -> list[bytes]:
    """Items in order with their partition watermark (from `watermark`: `lag` behind the
    newest item), timers fired as the watermark passes them (as Flink does), then every timer
    up to `end` (None: none); the pickled outputs."""
    out: list[bytes] = []
    for item in items:
        runtime.key = item.customer_id
        ctx = FakeCtx(runtime, timers, watermark if watermark is not None else -(1 << 62))
        out += [pickle.dumps(o) for o in op.process_element((watermark, item), ctx)]
        watermark = max(watermark or _time(item) - lag, _time(item) - lag)
        out += _fire(op, runtime, timers, watermark)
    return out if end is None else out + _fire(op, runtime, timers, end)


def _time(item: Any) -> int:
    return getattr(item, "occurred_at", None) or item.updated_at


def _fire(op: Any, runtime: FakeRuntime, timers: dict[str, set[int]], watermark: int) -> list:
    out = []
    while True:
        due = sorted((t, key) for key, ts in timers.items() for t in ts if t <= watermark)
        if not due:
            return out
        t, key = due[0]
        timers[key].discard(t)
        runtime.key = key
        out += [pickle.dumps(o) for o in op.on_timer(t, FakeCtx(runtime, timers, watermark))]


def _journey() -> list[Any]:
    items: list[Any] = []
    for i, cid in enumerate(("a", "b", "c")):
        t = T0 + i * MINUTE
        items.append(profile(t - HOUR, cid=cid))
        items += [view(t + k * SECOND, pid=f"p{k}", cid=cid) for k in range(6)]
        items.append(add(t + 10 * SECOND, pid="p1", cid=cid))
    return items


def test_the_cache_changes_neither_outputs_nor_flink_state():
    items = _journey()
    end = T0 + 3 * HOUR
    results = []
    for size in (0, 10_000, 1):
        settings = Settings().with_overrides([f"flink.state_cache={size}"])
        states: dict[str, FakeValueState] = {}
        lists: dict[str, list[bytes]] = {}
        op, runtime = _operator(settings, states, lists)
        out = _drive(op, runtime, items, {}, end)
        results.append(([_plain(pickle.loads(o)) for o in out],
                        {k: _plain(pickle.loads(s.raw)) for k, s in states.items() if s.raw},
                        {k: [_plain(pickle.loads(e)) for e in v] for k, v in lists.items()}))
        assert len(op.cache) <= size
    assert results[0][0]                                    # something was emitted
    assert results[1] == results[0]
    assert results[2] == results[0]


def test_a_cached_read_skips_the_value_state_and_a_new_instance_reads_it():
    settings = Settings()
    states: dict[str, FakeValueState] = {}
    op, runtime = _operator(settings, states)
    timers: dict[str, set[int]] = {}
    _drive(op, runtime, [view(T0, cid="a"), view(T0 + SECOND, cid="a")],
           timers, T0)
    assert states["a"].reads == 1                           # only the first, empty read
    cached = op.cache.entries["a"][0]
    assert _plain(cached) == _plain(pickle.loads(states["a"].raw)[0])

    restored, runtime2 = _operator(settings, states)        # a restore: a new instance
    assert len(restored.cache) == 0
    runtime2.key = "a"
    list(restored.process_element((T0, view(T0 + 2 * SECOND, cid="a")),
                                  FakeCtx(runtime2, timers, T0)))
    assert states["a"].reads == 2


def test_an_entry_past_the_state_ttl_is_not_used():
    settings = Settings().with_overrides(["flink.state_ttl=1h"])
    states: dict[str, FakeValueState] = {}
    op, runtime = _operator(settings, states)
    timers: dict[str, set[int]] = {}
    _drive(op, runtime, [view(T0, cid="a")], timers, T0 - HOUR)
    state, timer, written_at, buffered = op.cache.entries["a"]
    op.cache.entries["a"] = (state, timer, written_at - HOUR, buffered)   # an hour ago
    runtime.key = "a"
    list(op.process_element((T0, view(T0 + SECOND, cid="a")),
                            FakeCtx(runtime, timers, T0)))
    assert states["a"].reads == 2                           # went back to the ValueState


def test_a_restore_between_buffered_steps_rebuilds_the_same_state_and_outputs():
    # Items out of order and a watermark that lags, so customers hold buffered entries in
    # the ListState when the job is restored (a new instance: no cache) halfway.
    items = _journey()
    items = items[::2] + items[1::2]
    end = T0 + 3 * HOUR
    whole_states: dict[str, FakeValueState] = {}
    op, runtime = _operator(Settings(), whole_states)
    whole = _drive(op, runtime, items, {}, end, lag=MINUTE)
    half = len(items) // 2
    states: dict[str, FakeValueState] = {}
    lists: dict[str, list[bytes]] = {}
    timers: dict[str, set[int]] = {}
    first, runtime1 = _operator(Settings(), states, lists)
    out = _drive(first, runtime1, items[:half], timers, None, lag=MINUTE)
    assert any(lists.values())               # the restore finds buffered entries
    second, runtime2 = _operator(Settings(), states, lists)
    watermark = max(_time(i) for i in items[:half]) - MINUTE
    out += _drive(second, runtime2, items[half:], timers, end, MINUTE, watermark)
    assert [_plain(pickle.loads(o)) for o in out] == [_plain(pickle.loads(o)) for o in whole]
    assert not any(lists.values())           # processed: the whole state written, list empty


# ------------------------------------------------------------------ PerTrigger (the arms stage)


def _arms_items() -> list[Any]:
    """Requests of one trigger type over three epochs and clicks on some, arriving well ahead
    of the watermark, so that most wait for their epoch in the ListState."""
    from tests.transforms.test_bandit import E0, outcome, request

    items: list[Any] = []
    for i in range(60):
        t = E0 + i * 3 * MINUTE
        items.append(request(t, f"m{i}", cid=f"c{i % 7}"))
        if i % 4 == 1:
            items.append(outcome(f"m{i - 1}", t - 3 * MINUTE, t + MINUTE, eid=f"o{i}"))
    return items


def _drive_arms(op: Any, runtime: FakeRuntime, items: list[Any], timers: dict[str, set[int]],
                watermark: int, end: int | None) -> tuple[list[bytes], int]:
    """Items in order; the watermark moves to 2 h behind the newest item every 10 items
    (timers fired as it passes them), then every timer up to `end`."""
    from transforms.bandit import Arms

    out: list[bytes] = []
    for k, item in enumerate(items):
        runtime.key = Arms.key(item)
        out += [pickle.dumps(o) for o in op.process_element(item, FakeCtx(runtime, timers,
                                                                          watermark))]
        if k % 10 == 9:
            watermark = max(watermark, Arms.time_of(item) - 2 * HOUR)
            out += _fire(op, runtime, timers, watermark)
    return (out if end is None else out + _fire(op, runtime, timers, end)), watermark


def _arms_operator(states: dict[str, FakeValueState], lists: dict[str, list[bytes]]) -> Any:
    from pipelines.flink_operators import per_trigger_fn

    runtime = FakeRuntime(states, lists)
    op = per_trigger_fn(Settings(), True)
    op.open(runtime)
    return op, runtime


def test_per_trigger_restored_between_buffered_steps_emits_the_same():
    from tests.transforms.test_bandit import E0

    items, start, end = _arms_items(), E0 - 3 * HOUR, E0 + 10 * HOUR
    whole_states: dict[str, FakeValueState] = {}
    op, runtime = _arms_operator(whole_states, {})
    whole, _ = _drive_arms(op, runtime, items, {}, start, end)
    assert sum(1 for o in whole if b"PayloadRequest" in o) == 60
    states: dict[str, FakeValueState] = {}
    lists: dict[str, list[bytes]] = {}
    timers: dict[str, set[int]] = {}
    half = len(items) // 2 + 3
    first, runtime1 = _arms_operator(states, lists)
    out, watermark = _drive_arms(first, runtime1, items[:half], timers, start, None)
    assert any(lists.values())               # the restore finds buffered requests
    second, runtime2 = _arms_operator(states, lists)
    more, _ = _drive_arms(second, runtime2, items[half:], timers, watermark, end)
    assert [_plain(pickle.loads(o)) for o in out + more] == [
        _plain(pickle.loads(o)) for o in whole]
    assert _plain(pickle.loads(states["cart_abandonment"].raw)) == _plain(
        pickle.loads(whole_states["cart_abandonment"].raw))
