"""The stages after PerCustomer on Beam: the arms stage (transforms/bandit.py) and Compose.

    PerCustomer's PAYLOAD (PayloadRequest) and OUTCOME (Outcome) outputs
    | "MergeArmItems"     Flatten
    | "KeyByTrigger"      (trigger type, item) (Arms.key)
    | "PerTrigger"        stateful DoFn over Core.arms: each request's variant, each outcome's
                          arm (pipelines/arms.py); PAYLOAD, OUTCOME out, dropped counted
    | "Compose"           stateless: PayloadRequest -> EmailPayload

PerTrigger's wakes are capped by the run's SignalGate (beam_products.py, SignalGate.arms_bound;
with or without a product stage): the DirectRunner holds PerTrigger's watermark neither at
PerCustomer's timers nor at elements still to deliver (docs/beam-topology.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam import typehints
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipelines.arms import is_arm_item
from pipelines.beam_local import Local, tally
from pipelines.beam_pipeline import DROPPED_PREFIX, _timer
from pipelines.common import build_core
from pipelines.keyed import next_timer
from transforms.bandit import Arms
from transforms.model import OUTCOME, PAYLOAD
from transforms.settings import Settings


def build_arms_stage(routed: Mapping[str, Any], local: Local,
                     settings: Settings) -> dict[str, Any]:
    """PerCustomer's requests and outcomes through the arms stage: the composed payloads and
    the outcomes, by output kind (PAYLOAD, OUTCOME)."""
    arms = (
        (routed[PAYLOAD], routed[OUTCOME])
        | "MergeArmItems" >> beam.Flatten()
        | "KeyByTrigger" >> beam.Map(_by_trigger).with_output_types(ArmKeyed)
        | "PerTrigger" >> beam.ParDo(PerTrigger(local, settings)).with_outputs(
            PAYLOAD, OUTCOME, main="unused")
    )
    return {OUTCOME: arms[OUTCOME],
            PAYLOAD: arms[PAYLOAD] | "Compose" >> beam.ParDo(Compose(local, settings))}


ArmKeyed = typehints.Tuple[str, typehints.Any]
ARMS = ReadModifyWriteStateSpec("arms", PickleCoder())
ARMS_WAKE_AT = ReadModifyWriteStateSpec("arms_wake_at", VarIntCoder())
ARMS_WAKE = TimerSpec("arms_wake", TimeDomain.WATERMARK)
_ARMS = beam.DoFn.StateParam(ARMS)
_ARMS_WAKE_AT = beam.DoFn.StateParam(ARMS_WAKE_AT)
_ARMS_WAKE = beam.DoFn.TimerParam(ARMS_WAKE)
# How far PerTrigger's last timer asked it to wake, while the SignalGate held it back.
ARMS_TARGET = ReadModifyWriteStateSpec("arms_target", VarIntCoder())
_ARMS_TARGET = beam.DoFn.StateParam(ARMS_TARGET)


def _by_trigger(item: Any) -> tuple[str, Any]:
    return Arms.key(item), item


class PerTrigger(beam.DoFn):
    """(trigger type, PayloadRequest | Outcome) -> the arms stage's outputs, tagged (PAYLOAD,
    OUTCOME; dropped counts to the run's Tally). Its watermark is the time of its timer when
    it fires (a DoFn is not told its watermark): an item arriving in between waits for it."""

    def __init__(self, local: Local, settings: Settings) -> None:
        self.local = local
        self.settings = settings

    def setup(self) -> None:
        """The run's core's arms (shared with PerCustomer) and the run's SignalGate."""
        from pipelines.beam_products import signal_gate

        self.arms = self.local.get("core", lambda: build_core(self.settings)).arms
        self.gate = signal_gate(self.local)

    def process(
        self, element: tuple[str, Any], arms: Any = _ARMS, wake_at: Any = _ARMS_WAKE_AT,
        timer: Any = _ARMS_WAKE, target: Any = _ARMS_TARGET,
    ) -> Iterator[TaggedOutput]:
        """One item of this trigger type, then on towards a wake that items in flight held
        back."""
        held = wake_at.read()
        state, outputs, wakes = self.arms.step(arms.read(), element[1], None)
        self.gate.arms_stepped(element[0], Arms.time_of(element[1]))
        goal = target.read()
        if goal is None:
            return self._store(held, state, outputs, wakes, arms, wake_at, timer, woke=False)
        state, more, wakes, waiting = self._wake_to(element[0], state, goal, target)
        return self._store(held, state, outputs + more, wakes, arms, wake_at, timer,
                           woke=False, waiting=waiting)

    @on_timer(ARMS_WAKE)
    def on_wake(
        self, fired: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        arms: Any = _ARMS, wake_at: Any = _ARMS_WAKE_AT, timer: Any = _ARMS_WAKE,
        target: Any = _ARMS_TARGET, key: Any = beam.DoFn.KeyParam,
    ) -> Iterator[TaggedOutput]:
        """Event time reached the timer: wake the arms at its time, but only as far as
        PerCustomer has woken its customers and PerTrigger stepped their items
        (SignalGate.arms_bound): the rest when those items arrive, or when the timer fires
        again."""
        t = fired.micros // 1000
        state, outputs, wakes, waiting = self._wake_to(key, arms.read(), t, target)
        return self._store(None, state, outputs, wakes, arms, wake_at, timer, woke=True,
                           waiting=waiting)

    def _wake_to(self, key: str, state: Any, goal: int, target: Any) -> tuple[Any, ...]:
        """Wake as far towards `goal` as the gate lets; (state, outputs, wakes, whether items
        of this key in flight hold it)."""
        t, waiting = self.gate.arms_bound(goal, key)
        state, outputs, wakes = self.arms.wake(state, t)
        if t < goal:
            target.write(goal)
        else:
            target.clear()
        return state, outputs, wakes, waiting

    def _store(self, held: int | None, state: Any, outputs: list[Any], wakes: list[int],
               arms: Any, wake_at: Any, timer: Any, woke: bool,
               waiting: bool = False) -> Iterator[TaggedOutput]:
        if state is None:
            arms.clear()
        else:
            arms.write(state)
        t = _timer(next_timer(held, state, wakes, woke))
        if waiting:   # no timer behind the watermark: it would starve the items it waits for
            t = None
        if t is None:
            wake_at.clear()
        elif woke or t != held:
            timer.set(Timestamp(micros=t * 1000))
            wake_at.write(t)
        dropped: dict[str, int] = {}
        for kind, record in outputs:
            if is_arm_item(kind):
                yield TaggedOutput(kind, record)
            else:
                dropped[DROPPED_PREFIX + record] = dropped.get(DROPPED_PREFIX + record, 0) + 1
        if dropped:
            tally(self.local).add(dropped)


class Compose(beam.DoFn):
    """PayloadRequest -> EmailPayload (Core.compose): the stateless half of a trigger,
    recommendations, catalog and templates, in a stage after the keyed one (as on Flink)."""

    def __init__(self, local: Local, settings: Settings) -> None:
        self.local = local
        self.settings = settings

    def setup(self) -> None:
        """The run's core (shared with PerCustomer)."""
        self.compose = self.local.get("core", lambda: build_core(self.settings)).compose

    def process(self, request: Any) -> Iterator[Any]:
        """One payload request of PerCustomer."""
        yield self.compose(request)
