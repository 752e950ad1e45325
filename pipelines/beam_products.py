"""The product-keyed stage on Beam (transforms/product_stage.py): a second keyed DoFn before
PerCustomer, over the same shard tables and timers (beam_pipeline.PerCustomer).

    Decode (events: items with a product also on PRODUCTS; changes)  (shard, [(item, wm, batch)])
    | "MergeProductInputs" Flatten
    | "PerProduct"        PerCustomer's mechanics keyed by product: SIGNAL, DEAD_LETTER out
    | "KeySignals"        CatalogSignal -> (customer shard, [(signal, its time - 1, SIGNALS)])
    -> PerCustomer, flattened with the decoded events and profiles

Why the outputs are the reference runner's: PerProduct's timer for a change at t holds its
output watermark at t, so PerCustomer's watermark passes t only after the change's signals
reached it (transforms/product_stage.py). The safe-watermark wakes (docs/beam-topology.md) stay
safe: Decode counts the items it routes to PerProduct with the batch, PerProduct counts those
it stepped, so the Flow's safe watermark covers both stages; and PerCustomer's jump beyond its
timer is capped by the SignalGate: below every product's next wake (no product can emit a
signal before its next wake), and none while signals emitted are not all stepped.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from pipelines import wire
from pipelines.arms import is_arm_item
from pipelines.beam_local import Local
from pipelines.beam_pipeline import PRODUCTS, PerCustomer, shard_of
from transforms.bandit import Arms
from transforms.catalog_changes import CatalogSignal
from transforms.model import DEAD_LETTER
from transforms.product_stage import SIGNAL, ProductStage, product_of, signal_watermark

SIGNALS = -1            # the batch number signals carry: no source batch (never counted)
K = TypeVar("K")


class Earliest(Generic[K]):
    """A time per key, and the earliest of them (a heap whose stale entries are skipped)."""

    def __init__(self) -> None:
        self.at: dict[K, int] = {}
        self.heap: list[tuple[int, K]] = []

    def set(self, key: K, t: int | None) -> None:
        """`key`'s time is now t (None: it has none)."""
        if t is None:
            self.at.pop(key, None)
        elif self.at.get(key) != t:
            self.at[key] = t
            heapq.heappush(self.heap, (t, key))

    def first(self) -> int | None:
        """The earliest time held, if any."""
        heap, at = self.heap, self.at
        while heap and at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


class Held:
    """How many items are held at each time, and the earliest time holding any."""

    def __init__(self) -> None:
        self.n: dict[int, int] = {}
        self.times: list[int] = []                # heap of those times (stale skipped)

    def add(self, t: int) -> None:
        """One more item held at t."""
        n = self.n.get(t, 0)
        self.n[t] = n + 1
        if not n:
            heapq.heappush(self.times, t)

    def release(self, t: int) -> None:
        """One item at t is no longer held."""
        n = self.n.get(t, 0) - 1
        if n > 0:
            self.n[t] = n
        else:
            self.n.pop(t, None)

    def first(self) -> int | None:
        """The earliest time holding an item, if any."""
        times, n = self.times, self.n
        while times and times[0] not in n:
            heapq.heappop(times)
        return times[0] if times else None


def _below(t: int, first: int | None) -> int:
    """t, capped below `first` (None: not capped)."""
    return first - 1 if first is not None and first <= t else t


class SignalGate:
    """How far PerCustomer may wake (thread-safe; one per run, in Local): below every
    product's next wake and below every signal emitted but not yet stepped (neither, without
    a product stage); and how far PerTrigger may (arms_bound), with or without one. The
    DirectRunner holds no output watermark for a stateful DoFn's timers, so PerCustomer's
    watermark may pass a change's time before PerProduct's timer for it has run: the gate keeps
    PerCustomer's wakes behind it (its timer then fires again until PerProduct caught up)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wakes: Earliest[str] = Earliest()    # product -> its next wake
        self.inflight = Held()                    # signals emitted, not yet stepped
        self.due: Earliest[int] = Earliest()      # PerCustomer shard -> its earliest wake
        self.arms: dict[str, Held] = {}           # trigger -> its items not yet stepped

    def update(self, signals: list[int], wakes: dict[str, int | None]) -> None:
        """PerProduct emitted signals at these times; its products' next wakes are `wakes`."""
        with self.lock:
            for t in signals:
                self.inflight.add(t)
            for pid, wake in wakes.items():
                self.wakes.set(pid, wake)

    def step(self, signals: list[int]) -> None:
        """PerCustomer has stepped signals at these times."""
        with self.lock:
            for t in signals:
                self.inflight.release(t)

    def bound(self, t: int) -> int:
        """`t` capped below every product's next wake and every signal in flight."""
        with self.lock:
            return _below(_below(t, self.wakes.first()), self.inflight.first())

    def customers(self, shard: int, due: int | None) -> None:
        """PerCustomer's `shard` has its earliest customer due at `due` (None: none)."""
        with self.lock:
            self.due.set(shard, due)

    def arms_emitted(self, routed: wire.Routed) -> None:
        """PerCustomer emitted these outputs: count its arm items (requests, outcomes) by
        trigger type and time."""
        items = [(Arms.key(record), Arms.time_of(record))
                 for sink, record in routed if is_arm_item(sink)]
        if not items:
            return
        with self.lock:
            for key, t in items:
                self.arms.setdefault(key, Held()).add(t)

    def arms_stepped(self, key: str, t: int) -> None:
        """PerTrigger has stepped an arm item of trigger type `key` and time t."""
        with self.lock:
            held = self.arms.get(key)
            if held is not None:
                held.release(t)

    def arms_bound(self, t: int, key: str) -> tuple[int, bool]:
        """How far PerTrigger's `key` may wake: `bound(t)`, below every customer PerCustomer
        has not woken yet, and below every arm item of `key` PerCustomer emitted that PerTrigger
        has not stepped yet (with whether such an item holds it: its arrival wakes it on). The
        DirectRunner holds PerTrigger's watermark neither at PerCustomer's timers (nor at a
        wake the gate cut) nor at elements still to deliver once its watermark passed them."""
        t = self.bound(t)
        with self.lock:
            t = _below(t, self.due.first())
            held = self.arms.get(key)
            first = held.first() if held is not None else None
            if first is not None and first <= t:
                return first - 1, True
            return t, False


def signal_gate(local: Local) -> SignalGate:
    """The run's SignalGate."""
    gate: SignalGate = local.get("signal_gate", SignalGate)
    return gate


class PerProduct(PerCustomer):
    """PerCustomer's shard tables and timers over the product stage, keyed by product."""

    key = staticmethod(product_of)
    cache = "product_states"
    active_counter = "active_products"
    gated = False       # the gate holds the other stages to its wakes, not it

    def make_keyed(self) -> wire.KeyedCore:
        """The product stage behind the keyed contract."""
        return wire.KeyedCore(ProductStage(self.settings.core), compose=False)  # type: ignore[arg-type]

    def setup(self) -> None:
        """PerCustomer's, and the run's SignalGate."""
        super().setup()
        self.signal_gate = signal_gate(self.local)

    def _store(self, table: Any, live: dict[str, list[Any]], routed: wire.Routed,
               *args: Any, **kwargs: Any) -> Iterator[TaggedOutput]:
        """Tell the gate what it emits and its products' next wakes, then PerCustomer's."""
        signals = [record.occurred_at for sink, record in routed if sink == SIGNAL]
        self.signal_gate.update(signals, {pid: (None if state is None else earliest)
                                          for pid, (_, state, earliest) in live.items()})
        return super()._store(table, live, routed, *args, **kwargs)


def build_product_stage(decoded_events: Any, decoded_changes: Any, local: Local,
                        settings: Any) -> tuple[Any, list[Any]]:
    """The product stage's signals keyed for PerCustomer, and its dead-letter PCollections."""
    routed = (
        (decoded_events[PRODUCTS], decoded_changes.items)
        | "MergeProductInputs" >> beam.Flatten()
        | "PerProduct" >> beam.ParDo(PerProduct(local, settings)).with_outputs(
            SIGNAL, DEAD_LETTER, main="unused")
    )
    signals = routed[SIGNAL] | "KeySignals" >> beam.ParDo(KeySignals())
    return signals, [decoded_changes[DEAD_LETTER], routed[DEAD_LETTER]]


class KeySignals(beam.DoFn):
    """CatalogSignal -> (customer shard, [(signal, signal_watermark, SIGNALS)])."""

    def process(self, signal: CatalogSignal) -> Iterator[Any]:
        """One signal, for its customer's shard of PerCustomer."""
        yield shard_of(signal.customer_id), [(signal, signal_watermark(signal), SIGNALS)]

