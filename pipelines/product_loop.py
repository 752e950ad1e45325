"""The product-keyed stage (transforms/product_stage.py) in the reference runner's loop.

    ProductLoop(stage, emit, signal)
    loop.step(item, watermark)       an item of the product stage, judged by its partition's
                                     watermark
    loop.advance(watermark)          fire every product timer at or before `watermark`

Timers as the reference runner keeps the customers' (pipelines/keyed.next_timer: one per
product, a heap of (time, product)); a woken product is woken at the watermark. Signals go to
`signal` (the reference runner steps them into the customer stage), every other output to
`emit`. The reference runner advances this loop before the customer stage at every watermark,
so a signal reaches its customer before the customer is processed past its time, as the
engines' watermarks order the two stages (see transforms/product_stage.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from pipelines.keyed import next_timer
from transforms.catalog_changes import CatalogSignal
from transforms.model import Output
from transforms.product_stage import SIGNAL, ProductStage, ProductState, product_of


class ProductLoop:
    """Product states and timers of the reference runner."""

    def __init__(self, stage: ProductStage, emit: Callable[[Output], None],
                 signal: Callable[[CatalogSignal], None]) -> None:
        self.stage = stage
        self.emit = emit
        self.signal = signal
        self.states: dict[str, ProductState] = {}
        self.timers: list[tuple[int, str]] = []
        self.next_wake: dict[str, int] = {}

    def step(self, item: Any, watermark: int | None, pid: str | None = None) -> None:
        """One item of the product stage (an event without a product key is ignored); `pid`:
        its product_of, if the caller has it already."""
        if pid is None:
            pid = product_of(item)
            if pid is None:
                return
        self._store(pid, *self.stage.step(self.states.get(pid), item, watermark))

    def advance(self, watermark: int) -> None:
        """Fire every product timer at or before `watermark`, in time order."""
        timers, next_wake = self.timers, self.next_wake
        while timers and timers[0][0] <= watermark:
            t, pid = heapq.heappop(timers)
            if next_wake.get(pid) != t:
                continue  # superseded by an earlier timer, already fired
            state = self.states.get(pid)
            if state is None:
                del next_wake[pid]
            else:
                self._store(pid, *self.stage.wake(state, watermark), woke=True)

    def _store(self, pid: str, state: ProductState | None, outputs: list[Output],
               wake_at: list[int], woke: bool = False) -> None:
        if state is None:
            self.states.pop(pid, None)
        else:
            self.states[pid] = state
        for kind, record in outputs:
            if kind == SIGNAL:
                self.signal(record)
            else:
                self.emit((kind, record))
        held = self.next_wake.get(pid)
        t = next_timer(held, state, wake_at, woke)
        if t is None:
            if held is not None:
                del self.next_wake[pid]
        elif woke or t != held:
            self.next_wake[pid] = t
            heapq.heappush(self.timers, (t, pid))

