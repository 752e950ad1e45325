"""The bandit: which subject variant each message goes out with (DESIGN.md section 9).

The arms stage is a second keyed stage after the customer one, keyed by trigger type, with the
customer core's contract (transforms/core.py):

    Arms.step(state | None, item, watermark) -> (state, outputs, wake_at)
    Arms.wake(state | None, t)               -> (state, outputs, wake_at)
    Arms.key(item) -> the trigger type (the stage's key)

Its items are the customer stage's PayloadRequests (a message to choose a variant for) and
its Outcomes (an attributed open, click or purchase). Outputs: (PAYLOAD, the request with
`variant` set) for the compose stage, (OUTCOME, the outcome with the variant of its message)
for the outcomes sink, and (DROPPED, reason) counts.

Policy (core.variant_policy):

    thompson        Thompson sampling over the trigger's variants (the templates' subject
                    variants, sorted): per variant Beta(1 + rewarded messages, 1 + sends -
                    rewarded messages); one draw per variant from a numpy Generator (PCG64)
                    seeded by the first 8 bytes of SHA-256(message_id), in sorted variant
                    order; the largest draw wins (ties: the first in that order).
    uniform         render.choose_variant: a stable hash split of customers (the A/B baseline)
    fixed:<v>       always v (the trigger's uniform choice if it has no variant v)

Epochs: event time is cut into epochs of core.bandit_epoch (aligned to epoch 0 ms). A message
fired at t in epoch e is chosen from the counts of the sends and rewards whose time is before
start(e): the send counts at its fired_at, a reward (the first core.bandit_reward outcome,
"click" or "open", of a message: a message is rewarded once however often it is clicked) at
that outcome's occurred_at. Holdout messages have no variant: their outcomes pass through
uncounted.

Determinism. An item is *ready* once the stage's watermark has reached start(e) - 1 (e the
epoch of the message's fired_at): nothing with a time before start(e) can then still arrive,
so the counts before start(e) are final. Ready items are processed at once (a step) or when
the watermark reaches them (a wake), in (epoch, time, id) order. Processing an item of epoch
e reads only the counts before start(e) and writes counts at times >= its fired_at, in epochs
>= e; so items of one epoch commute, and every runner, however it batches arrivals and
watermarks, makes the same choices. The one order-dependent count, the first reward of a
message, is kept as the earliest one seen (moved if an earlier reward comes later: its
epoch is not final yet, as the reward arrived ahead of the watermark). Variants are not
remembered per message: the variant of an outcome's message is recomputed from its message
id and the counts before start(epoch(fired_at)), which are final; the deltas of each epoch
are kept for the attribution window, then folded into one base count.

The watermark argument. The customer stage emits a request (time fired_at) or an outcome (time
occurred_at) while it processes that instant, which it does when its own watermark reaches it
and before it forwards that watermark (Flink fires timers, then emits the watermark; Beam
holds a stage's output watermark at its pending timers; the reference runner steps the arms
stage with the watermark of its previous round). So the arms stage sees every item before its
watermark passes the item's time; one that comes behind it anyway is still processed (never
lost) and counted as dropped `arms_late`, which no runner should show.

Why one stage keyed by trigger type, and not a count stage broadcast to a choosing stage: the
variant of a message depends on the counts, and the counts need the variant of each rewarded
message, so counts fed by the chooser and broadcast back to it would be a cycle, which neither
Beam nor PyFlink's DataStream API can express. Counting and choosing one trigger's arms in one
keyed operator is acyclic and deterministic; the counts play the role of the broadcast state.

State (ArmsState, per trigger type), bounded:

    pending     items waiting to be ready          until ready (one epoch of items at most)
    deltas      counts per epoch                   attribution_window + one epoch, then folded
    base        counts of older epochs             a few numbers per variant
    rewarded    message -> first reward             attribution_window after its fired_at, and
                                                   at most max_bandit_rewarded (oldest sends
                                                   first, evicted:rewarded; a later reward of
                                                   an evicted message counts again, and as
                                                   eviction depends on arrival order, runners
                                                   may then differ)
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from transforms.bounds import evict
from transforms.model import DROPPED, OUTCOME, PAYLOAD, Outcome, Output, PayloadRequest
from transforms.render import DEFAULT_VARIANT, choose_variant
from transforms.settings import CoreSettings
from transforms.slots import SlotTuple
from transforms.state import CHANGED, step_change

THOMPSON = "thompson"
UNIFORM = "uniform"
FIXED = "fixed:"
REWARDS = ("click", "open")
EVICTED_REWARDED = "evicted:rewarded"
ARMS_LATE = "arms_late"

ArmItem = PayloadRequest | Outcome
Counts = dict[str, list[int]]          # variant -> [sends, rewarded messages]
# Pending: (epoch of fired_at, time, rank, id, item); requests rank before outcomes.
Pending = tuple[int, int, int, str, ArmItem]
Result = tuple["ArmsState | None", list[Output], list[int]]


class ArmsState(SlotTuple):
    """The arms of one trigger type; see the module docstring."""

    __slots__ = ("trigger_type", "pending", "deltas", "base", "rewarded", "watermark",
                 "folded_through")

    def __init__(self, trigger_type: str) -> None:
        self.trigger_type = trigger_type
        self.pending: list[Pending] = []
        self.deltas: dict[int, Counts] = {}
        self.base: Counts = {}
        # message_id -> (first reward time, fired_at, variant)
        self.rewarded: dict[str, tuple[int, int, str]] = {}
        self.watermark: int | None = None        # the newest watermark seen
        self.folded_through: int | None = None   # epochs <= this are in base

    def __repr__(self) -> str:
        return (f"ArmsState({self.trigger_type!r}, pending={len(self.pending)}, "
                f"epochs={sorted(self.deltas)}, rewarded={len(self.rewarded)})")


def draw(message_id: str, variants: Sequence[str], counts: Counts) -> str:
    """Thompson sampling: the variant with the largest Beta draw, seeded by the message id.

    `variants` must be sorted; counts[v] = [sends, rewarded messages] (absent: none)."""
    seed = int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:8], "big")
    rng = np.random.Generator(np.random.PCG64(seed))
    best, best_x = variants[0], -1.0
    for v in variants:
        sends, rewards = counts.get(v, (0, 0))
        x = float(rng.beta(1 + rewards, 1 + max(0, sends - rewards)))
        if x > best_x:
            best, best_x = v, x
    return best


class Arms:
    """The bandit's rules, configured once: settings and the variants of each trigger type."""

    def __init__(self, settings: CoreSettings, variants: Callable[[str], Sequence[str]]) -> None:
        self.epoch = max(1, settings.bandit_epoch)
        self.window = settings.attribution_window
        self.reward = settings.bandit_reward
        if self.reward not in REWARDS:
            raise ValueError(f"core.bandit_reward must be one of {REWARDS}, not {self.reward!r}")
        policy = settings.variant_policy
        if policy not in (THOMPSON, UNIFORM) and not (
            policy.startswith(FIXED) and len(policy) > len(FIXED)
        ):
            raise ValueError(
                f"core.variant_policy must be thompson, uniform or fixed:<variant>, not {policy!r}"
            )
        self.policy = policy
        self.max_rewarded = max(1, settings.max_bandit_rewarded)
        self._variants = variants
        self._sorted: dict[str, tuple[str, ...]] = {}

    @staticmethod
    def key(item: ArmItem) -> str:
        """The stage's key: the item's trigger type."""
        return item.trigger.type if isinstance(item, PayloadRequest) else item.trigger_type

    @staticmethod
    def time_of(item: ArmItem) -> int:
        """An item's time for the stage's watermark: a request's fired_at, an outcome's
        occurred_at."""
        return item.trigger.fired_at if isinstance(item, PayloadRequest) else item.occurred_at

    def variants(self, trigger_type: str) -> tuple[str, ...]:
        """The trigger's variants, sorted (cached)."""
        found = self._sorted.get(trigger_type)
        if found is None:
            found = self._sorted[trigger_type] = tuple(sorted(set(self._variants(trigger_type))))
        return found

    def epoch_of(self, t: int) -> int:
        """The epoch of event time t (epochs aligned to 0 ms; Python's floor division)."""
        return t // self.epoch

    def ready_at(self, epoch: int) -> int:
        """The watermark from which items of `epoch` are processed: start(epoch) - 1."""
        return epoch * self.epoch - 1

    # ------------------------------------------------------------------ the keyed contract

    def step(self, state: ArmsState | None, item: ArmItem, watermark: int | None = None) -> Result:
        """Take one item: processed at once when ready, else buffered until it is."""
        if state is None:
            state = ArmsState(self.key(item))
        outputs: list[Output] = []
        if watermark is not None and (state.watermark is None or watermark > state.watermark):
            # What this watermark makes ready goes first (a timer not fired yet).
            outputs += self.wake(state, watermark)[1]
        if isinstance(item, PayloadRequest):
            t = fired = item.trigger.fired_at
            entry: Pending = (self.epoch_of(fired), t, 0, item.message_id, item)
        else:
            t, fired = item.occurred_at, item.fired_at
            entry = (self.epoch_of(fired), t, 1, item.event_id, item)
        if state.watermark is not None and t <= state.watermark:
            outputs.append((DROPPED, ARMS_LATE))
        if state.watermark is not None and self.ready_at(entry[0]) <= state.watermark:
            self._process(state, entry, outputs)
            return state, outputs, []
        state.pending.append(entry)
        return state, outputs, [self.ready_at(entry[0])]

    def wake(self, state: ArmsState | None, t: int) -> Result:
        """The watermark reached t: process every item ready by t, in order, then trim."""
        if state is None:
            return None, [], []
        outputs: list[Output] = []
        if state.watermark is None or t > state.watermark:
            state.watermark = t
        if state.pending:
            state.pending.sort(key=lambda p: p[:4])
            cut = 0
            while cut < len(state.pending) and self.ready_at(state.pending[cut][0]) <= t:
                cut += 1
            due, state.pending = state.pending[:cut], state.pending[cut:]
            for entry in due:
                self._process(state, entry, outputs)
        self._trim(state, t)
        wake_at = [self.ready_at(min(p[0] for p in state.pending))] if state.pending else []
        return state, outputs, wake_at

    # ------------------------------------------------------------------ state kept in parts

    @staticmethod
    def held(state: ArmsState | None) -> tuple[int, int | None] | None:
        """What step_change needs of a state before a step: (pending items, watermark)."""
        return None if state is None else (len(state.pending), state.watermark)

    def step_change(self, held: tuple[int, int | None] | None, state: ArmsState | None,
                    outputs: list[Output], wake_at: list[int]) -> int:
        """What the step that returned (state, outputs, wake_at) changed (`held`: Arms.held of
        the state before it): state.step_change's rule once the watermark is the same (no wake
        ran). BUFFERED when it only appended its item to `pending` and asked for the item's
        ready time (buffered_wake): an engine may then append that entry to a list (rebuffer
        repeats it) instead of writing the whole state, whose pending requests are most of its
        bytes while an epoch is not ready. Else CHANGED (the stage has no UNCHANGED step: it
        outputs no duplicates)."""
        if held is None or state is None or state.watermark != held[1]:
            return CHANGED
        return step_change(held[0], state, outputs, wake_at, self.buffered_wake)

    def buffered_wake(self, entry: Pending) -> int:
        """The wake a step that only buffered `entry` asks for: its epoch's ready time."""
        return self.ready_at(entry[0])

    @staticmethod
    def rebuffer(state: ArmsState, buffered: Iterable[Pending]) -> int:
        """Repeat on `state` the BUFFERED steps that appended these entries, in their order;
        returns how many."""
        n = len(state.pending)
        state.pending.extend(buffered)
        return len(state.pending) - n

    # ------------------------------------------------------------------ processing

    def _process(self, state: ArmsState, entry: Pending, outputs: list[Output]) -> None:
        epoch, _, _, _, item = entry
        if isinstance(item, PayloadRequest):
            variant = self._choose(state, item.message_id, item.customer_id, epoch)
            self._add(state, self.epoch_of(item.trigger.fired_at), variant, 0, 1)
            outputs.append((PAYLOAD, dataclasses.replace(item, variant=variant)))
            return
        if item.holdout:
            outputs.append((OUTCOME, item))
            return
        variant = self._choose(state, item.message_id, item.customer_id, epoch)
        outputs.append((OUTCOME, dataclasses.replace(item, variant=variant)))
        if item.kind == self.reward:
            self._reward(state, item, variant, outputs)

    def _reward(
        self, state: ArmsState, item: Outcome, variant: str, outputs: list[Output]
    ) -> None:
        """Count the message rewarded once, at its earliest reward time seen."""
        t = item.occurred_at
        held = state.rewarded.get(item.message_id)
        if held is not None:
            if t >= held[0]:
                return
            self._add(state, self.epoch_of(held[0]), variant, 1, -1)
            del state.rewarded[item.message_id]
        state.rewarded[item.message_id] = (t, item.fired_at, variant)
        self._add(state, self.epoch_of(t), variant, 1, 1)
        if len(state.rewarded) > self.max_rewarded:
            outputs += [(DROPPED, EVICTED_REWARDED)] * evict(
                state.rewarded, self.max_rewarded, lambda m: (state.rewarded[m][1], m))

    @staticmethod
    def _add(state: ArmsState, epoch: int, variant: str, index: int, n: int) -> None:
        if state.folded_through is not None and epoch <= state.folded_through:
            counts = state.base            # a late item: its epoch is already folded
        else:
            counts = state.deltas.setdefault(epoch, {})
        row = counts.setdefault(variant, [0, 0])
        row[index] += n

    def _choose(self, state: ArmsState, message_id: str, customer_id: str, epoch: int) -> str:
        kind = state.trigger_type
        variants = self.variants(kind)
        if not variants:
            return DEFAULT_VARIANT
        policy = self.policy
        if policy == THOMPSON:
            return draw(message_id, variants, self.counts_before(state, epoch))
        if policy.startswith(FIXED) and policy[len(FIXED):] in variants:
            return policy[len(FIXED):]
        return choose_variant(customer_id, kind, variants)

    def counts_before(self, state: ArmsState, epoch: int) -> Counts:
        """Sends and rewarded messages per variant with a time before start(epoch)."""
        total = {v: list(row) for v, row in state.base.items()}
        for e, counts in state.deltas.items():
            if e < epoch:
                for v, (sends, rewards) in counts.items():
                    row = total.setdefault(v, [0, 0])
                    row[0] += sends
                    row[1] += rewards
        return total

    def _trim(self, state: ArmsState, t: int) -> None:
        """Fold the epochs no outcome can still need into base; forget rewarded messages
        whose attribution window has ended by t."""
        # An outcome arriving after t occurred after t, so its message was fired after
        # t - window: epochs before that one's are only ever needed through base.
        horizon = self.epoch_of(t - self.window) - 1
        if state.folded_through is None or horizon > state.folded_through:
            for e in [e for e in state.deltas if e <= horizon]:
                for v, (sends, rewards) in state.deltas.pop(e).items():
                    row = state.base.setdefault(v, [0, 0])
                    row[0] += sends
                    row[1] += rewards
            state.folded_through = horizon
            if state.rewarded:
                end = t - self.window
                state.rewarded = {m: r for m, r in state.rewarded.items() if r[1] >= end}
