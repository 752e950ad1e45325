"""The reference runner: the core driven by an in-memory event-time loop (no engine).

It is the yardstick the engines are tested against, and the fastest way to replay a file.
The clock is transforms/clock.py's, as on the engines: each item counts in its source
partition (clock.source_partition: its Kafka partition, the file, or with
core.replay_partitions N the partition Kafka's default partitioner gives its customer) and is
judged late against that partition's watermark just before it. Timers are a heap of (time,
customer); those the combined watermark has reached fire in rounds, every `fire_every` input
items, as an engine fires them when its periodic watermark advances, and at the end of input
the watermark goes to the end of time, so every pending deadline fires at its own time. How
often timers fire changes no output (a test checks it). Payload requests and outcomes go
through the arms stage (transforms/bandit.py, pipelines/arms.py), whose watermark moves after
each round of timers, then requests are composed.

    items (BehaviourEvent | CustomerProfile | CatalogChange | DeadLetter)
        -> ReferenceRunner -> outputs by kind

Catalog changes and product events also go to the product-keyed stage (pipelines/
product_loop.py), whose timers fire before the customers' at every watermark; its signals are
stepped into the customer stage at once (transforms/product_stage.py). With
core.catalog_signals false there is no product stage: a catalog change is a dead letter
(wire.replayed).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipelines.arms import ArmsDriver, is_arm_item
from pipelines.common import build_core
from pipelines.keyed import next_timer
from pipelines.outputs import OutputFiles
from pipelines.product_loop import ProductLoop
from pipelines.wire import admit, replayed
from transforms.catalog_changes import CatalogChange, CatalogSignal
from transforms.clock import END_OF_TIME, replay_clock, source_partition
from transforms.core import Core
from transforms.model import (
    DEAD_LETTER,
    PAYLOAD,
    CustomerProfile,
    DeadLetter,
    Item,
    Output,
    event_time,
)
from transforms.product_stage import ProductStage, product_of, signal_watermark
from transforms.settings import Settings
from transforms.state import CustomerState

FIRE_EVERY = 16_384  # input items between two rounds of timers


def wall_ms() -> int:
    """The wall clock in epoch milliseconds (bounds future timestamps and the watermark)."""
    return time.time_ns() // 1_000_000


class ReferenceRunner:
    """Feeds items to the core in arrival order and fires timers as the watermark passes."""

    def __init__(
        self,
        core: Core,
        emit: Callable[[Output], None],
        clock: Callable[[], int] = wall_ms,
        compose: bool = True,
        fire_every: int = FIRE_EVERY,
    ) -> None:
        self.core = core
        self.clock = clock
        self.emit = emit
        # The compose stage inline (payload requests -> payloads), or requests out as they are.
        self.compose = core.compose if compose else None
        self.states: dict[str, CustomerState] = {}
        # One timer per customer (keyed.next_timer): heap entries not in `next_wake` are stale.
        self.timers: list[tuple[int, str]] = []
        self.next_wake: dict[str, int] = {}
        self.event_clock = replay_clock(core.settings, clock())
        self.partitions = core.settings.replay_partitions
        self.fire_every = max(1, fire_every)
        self.unfired = 0  # items fed since the last round of timers
        # The arms stage (transforms/bandit.py): requests and outcomes go through it.
        self.arms = ArmsDriver(core.arms, self._emit_arm)
        self.products = (ProductLoop(ProductStage(core.settings), emit, self._signal)
                         if core.settings.catalog_signals else None)

    @property
    def watermark(self) -> int | None:
        """The combined watermark (None before the first item)."""
        return self.event_clock.watermark

    def feed(self, item: Item | CatalogChange | DeadLetter) -> None:
        """One input item in arrival order."""
        item = replayed(item, self.core.settings)
        if isinstance(item, DeadLetter):
            self.emit((DEAD_LETTER, item))
            return
        now = self.clock()
        if isinstance(item, CatalogChange):
            self._feed_change(item, now)
            return
        admitted = admit(item, self.core.settings, now)
        if isinstance(admitted, DeadLetter):
            # Checked before the item can move the clock (the decoders do the same).
            self.emit((DEAD_LETTER, admitted))
            return
        t = event_time(item)
        cid = item.customer_id
        partition = source_partition(item.origin, cid, self.partitions,
                                     isinstance(item, CustomerProfile))
        clock = self.event_clock
        own = clock.partition_watermark(partition)
        if own is not None and t <= own:
            # A late item (a late profile is still applied) meets its customer as an engine
            # would, one whose timers fire as the watermark passes them: a due timer first.
            combined = clock.watermark
            due = self.next_wake.get(cid)
            if combined is not None and due is not None and due <= combined:
                if self.products is not None:
                    self.products.advance(combined)
                self._fire(cid, combined)
        state, outputs, wake_at = self.core.step(self.states.get(cid), item, own)
        self._store(cid, state, outputs, wake_at)
        products = self.products
        if products is not None:
            pid = product_of(item)
            if pid is not None:
                products.step(item, own, pid)
        clock.observe(partition, t, now)
        self.unfired += 1
        if self.unfired >= self.fire_every and clock.watermark is not None:
            self.unfired = 0
            self.advance(clock.watermark)

    def _feed_change(self, change: CatalogChange, now: int) -> None:
        """A catalog change: to the product stage, in its partition (keyed by product)."""
        admitted = admit(change, self.core.settings, now)
        if isinstance(admitted, DeadLetter) or self.products is None:
            self.emit((DEAD_LETTER, admitted))
            return
        t = change.occurred_at
        partition = source_partition(change.origin, change.product_id, self.partitions)
        clock = self.event_clock
        self.products.step(change, clock.partition_watermark(partition))
        clock.observe(partition, t, now)
        self.unfired += 1
        if self.unfired >= self.fire_every and clock.watermark is not None:
            self.unfired = 0
            self.advance(clock.watermark)

    def _signal(self, signal: CatalogSignal) -> None:
        """A product-stage signal into its customer's core."""
        cid = signal.customer_id
        self._store(cid, *self.core.step(self.states.get(cid), signal, signal_watermark(signal)))

    def advance(self, watermark: int) -> None:
        """Fire every timer at or before `watermark`, in time order: the product stage's
        first (its signals reach the customers before they pass the signals' time)."""
        if self.products is not None:
            self.products.advance(watermark)
        timers, next_wake = self.timers, self.next_wake
        while timers and timers[0][0] <= watermark:
            t, cid = heapq.heappop(timers)
            if next_wake.get(cid) == t:  # else superseded by an earlier timer, already fired
                self._fire(cid, watermark)
        self.arms.advance(watermark)

    def _fire(self, cid: str, watermark: int) -> None:
        """Customer `cid`'s timer (due at or before `watermark`) fires."""
        state = self.states.get(cid)
        if state is None:
            del self.next_wake[cid]
        else:
            self._store(cid, *self.core.wake(state, watermark), woke=True)

    def _emit_arm(self, out: Output) -> None:
        """An output of the arms stage: requests composed (unless compose is off)."""
        if self.compose is not None and out[0] == PAYLOAD:
            out = (PAYLOAD, self.compose(out[1]))
        self.emit(out)

    def finish(self) -> None:
        """End of a bounded input: the watermark goes to the end of time."""
        self.event_clock.finish()
        self.advance(END_OF_TIME)

    def _store(
        self, cid: str, state: CustomerState | None, outputs: list[Output], wake_at: list[int],
        woke: bool = False,
    ) -> None:
        if state is None:
            self.states.pop(cid, None)
        else:
            self.states[cid] = state
        emit, arms = self.emit, self.arms
        for out in outputs:
            if is_arm_item(out[0]):
                arms.feed(out[1])
            else:
                emit(out)
        held = self.next_wake.get(cid)
        t = next_timer(held, state, wake_at, woke)
        if t is None:
            if held is not None:
                del self.next_wake[cid]
        elif woke or t != held:
            self.next_wake[cid] = t
            heapq.heappush(self.timers, (t, cid))


def run_replay(
    items: Iterable[Item | CatalogChange | DeadLetter], settings: Settings, out_dir: Path,
    core: Core | None = None,
) -> dict[str, Any]:
    """Replay `items` through the reference runner into out_dir/*.jsonl; returns the summary."""
    core = core or build_core(settings)
    with OutputFiles(out_dir) as out:
        runner = ReferenceRunner(core, out.write)
        for item in items:
            out.count_input(item)
            runner.feed(item)
        runner.finish()
        out.summary["active_customers_at_end"] = len(runner.states)
    return out.summary
