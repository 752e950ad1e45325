"""The arms stage (transforms/bandit.py) behind the runners: engine-free parts.

    ArmsDriver(arms, emit)     the stage in memory, for the reference runner: states by
                               trigger type, one wake per key, and the stage's watermark
    is_arm_item(kind)          whether a customer-stage output goes to the arms stage

Every runner puts the same stage between the customer stage and compose:

    customer stage --PAYLOAD (PayloadRequest), OUTCOME--> arms stage, keyed by trigger type
                   --PAYLOAD (request with its variant)--> compose --> payloads
                   --OUTCOME (outcome with its variant)--> outcomes

The stage's watermark is the one its engine gives it: on Flink the operator's current
watermark, on Beam the time of the timer that fired (Beam does not tell a DoFn its watermark;
an item arriving in between waits for the next timer, which changes no output), and here the
watermark of the reference runner's previous round of timers, since the outputs of a round at
W come before W reaches the next stage (the argument is in transforms/bandit.py).
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.keyed import next_timer
from transforms.bandit import ArmItem, Arms, ArmsState
from transforms.model import OUTCOME, PAYLOAD, Output


def is_arm_item(kind: str) -> bool:
    """Payload requests and outcomes of the customer stage go through the arms stage."""
    return kind == PAYLOAD or kind == OUTCOME


class ArmsDriver:
    """The arms stage in memory: `feed` its items as the customer stage emits them, `advance`
    its watermark after each round of the customer stage's timers."""

    def __init__(self, arms: Arms, emit: Callable[[Output], None]) -> None:
        self.arms = arms
        self.emit = emit
        self.states: dict[str, ArmsState] = {}
        self.wakes: dict[str, int] = {}
        self.watermark: int | None = None

    def feed(self, item: ArmItem) -> None:
        """One payload request or outcome of the customer stage."""
        key = self.arms.key(item)
        self._store(key, *self.arms.step(self.states.get(key), item, self.watermark))

    def advance(self, watermark: int) -> None:
        """The stage's watermark moves to `watermark`: wake the keys due by then."""
        if self.watermark is not None and watermark <= self.watermark:
            return
        self.watermark = watermark
        for key in sorted(k for k, t in self.wakes.items() if t <= watermark):
            self._store(key, *self.arms.wake(self.states.get(key), watermark), woke=True)

    def _store(self, key: str, state: ArmsState | None, outputs: list[Output],
               wake_at: list[int], woke: bool = False) -> None:
        if state is None:
            self.states.pop(key, None)
        else:
            self.states[key] = state
        t = next_timer(self.wakes.get(key), state, wake_at, woke)
        if t is None:
            self.wakes.pop(key, None)
        else:
            self.wakes[key] = t
        for out in outputs:
            self.emit(out)
