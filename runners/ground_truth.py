"""A ground truth for generated traffic: how customers answer the emails the job sends.

    GroundTruth (per trigger type and variant: open / click / purchase propensities; per trigger
    type: the holdout's base purchase rate) + the job's sends -> email_open / email_click /
    purchase events, and `close_loop` to make traffic and sends agree

Every answer is drawn from SHA-256 of (seed, message_id, what), never from a shared random
stream: the same message gets the same answer on every run, whatever else was sent, and the
same message sent with another variant is judged against the same uniform draw (common random
numbers: a policy comparison is not noise between two draws). Per message, one draw `u` decides
engagement (opened iff u < p_open, clicked iff u < p_click, so a click implies an open) and
another decides the purchase (u' < p_purchase; for a held-out customer u' < base rate: the
purchase they would make anyway, so the lift of the email is measurable). Delays are drawn the
same way, within `delays` (open after the send, click after the open, purchase after the click,
the open, or for the holdout the would-be send), all well inside the attribution window.

Closing the loop. Which emails are sent, to whom and with which variant, depends on the job
(and with a learning variant policy on earlier answers), and the answers depend on the sends.
`close_loop` iterates whole replays of the reference runner (pipelines/reference.py) through
an events-JSONL file, exactly as `personalize replay --format events-jsonl` reads it: round 1
without answers, round k+1 with the answers to round k's sends, until a round sends exactly
what the previous one sent (then the answers in the input are the answers to its own sends: a
fixed point) or `max_rounds` is reached. Choices of bandit epoch e depend only on answers
before e, so round k fixes at least epoch k: a run of E epochs converges in at most E + 1
rounds. Engines choose identically, so the resulting file replays the same on every runner.

Answers are merged into the base traffic's arrival order before the first base item whose
event time is after theirs: everything read before an answer is no later than it, so no answer
is ever late, whatever out-of-orderness the base traffic has.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.traffic import (
    CatalogProduct,
    Generated,
    Malformed,
    Traffic,
    build_catalog,
    jsonl_line,
)
from transforms.model import EMAIL_CLICK, EMAIL_OPEN, PURCHASE, BehaviourEvent, Product, event_time
from transforms.payload import message_id as derive_message_id
from transforms.settings import HOUR, MINUTE, SECOND, Settings, parse_duration

HOLDOUT_DECISION = "suppressed:holdout"
KINDS = ("open", "click", "purchase")
DEFAULT_MAX_ROUNDS = 60
# The attribution window of the learning loop (core.attribution_window after it exists): every
# answer must land inside it, or the job could not credit it to its message.
DEFAULT_ATTRIBUTION_WINDOW = 72 * HOUR


@dataclass(frozen=True)
class Arm:
    """Propensities of one (trigger type, variant): unconditional shares of its sends."""

    open: float
    click: float
    purchase: float

    def get(self, kind: str) -> float:
        """The propensity of `kind` (open | click | purchase)."""
        return float(getattr(self, kind))


@dataclass(frozen=True)
class GroundTruth:
    """Per (trigger type, variant) propensities, per trigger type the holdout's base purchase
    rate, delay ranges in ms (low, high) and the seed of every draw."""

    arms: dict[str, dict[str, Arm]]
    base_purchase: dict[str, float]
    default_arm: Arm = Arm(open=0.2, click=0.02, purchase=0.02)
    default_base_purchase: float = 0.01
    delays: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "open": (1 * MINUTE, 4 * HOUR),
            "click": (10 * SECOND, 15 * MINUTE),
            "purchase": (5 * MINUTE, 12 * HOUR),
        }
    )
    seed: int = 0

    def arm(self, trigger: str, variant: str) -> Arm:
        """The propensities of `variant` of `trigger` (default_arm if the truth does not say)."""
        return self.arms.get(trigger, {}).get(variant, self.default_arm)

    def base(self, trigger: str) -> float:
        """The purchase rate of a held-out customer of `trigger`."""
        return self.base_purchase.get(trigger, self.default_base_purchase)

    def best(self, trigger: str, kind: str = "click") -> tuple[str | None, float]:
        """The variant of `trigger` with the highest `kind` propensity (ties: first by name)."""
        arms = self.arms.get(trigger, {})
        if not arms:
            return None, self.default_arm.get(kind)
        name = min(arms, key=lambda v: (-arms[v].get(kind), v))
        return name, arms[name].get(kind)

    def max_delay(self) -> int:
        """The latest an answer can come after its send."""
        return sum(high for _, high in self.delays.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON form `load_truth` reads back (delays in ms)."""
        return {
            "seed": self.seed,
            "arms": {
                t: {v: vars(a) for v, a in sorted(arms.items())}
                for t, arms in sorted(self.arms.items())
            },
            "base_purchase": dict(sorted(self.base_purchase.items())),
            "default_arm": vars(self.default_arm),
            "default_base_purchase": self.default_base_purchase,
            "delays": {k: list(v) for k, v in self.delays.items()},
        }


def default_truth(seed: int = 0) -> GroundTruth:
    """Variants that differ clearly: cart `b` and browse `a` are the better subject lines."""
    return GroundTruth(
        arms={
            "cart_abandonment": {
                "a": Arm(open=0.30, click=0.03, purchase=0.04),
                "b": Arm(open=0.35, click=0.08, purchase=0.07),
            },
            "browse_intensity": {
                "a": Arm(open=0.25, click=0.06, purchase=0.03),
                "b": Arm(open=0.20, click=0.02, purchase=0.02),
            },
        },
        base_purchase={"cart_abandonment": 0.02, "browse_intensity": 0.01},
        seed=seed,
    )


def truth_from_json(data: dict[str, Any]) -> GroundTruth:
    """A GroundTruth from its JSON (or TOML) form; ValueError says what is wrong.

    {"seed": 0, "arms": {"<trigger>": {"<variant>": {"open": p, "click": p, "purchase": p}}},
     "base_purchase": {"<trigger>": p}, "default_arm": {...}, "default_base_purchase": p,
     "delays": {"open": [low, high], "click": [...], "purchase": [...]}}  (durations: ms or "5m")
    """
    if not isinstance(data, dict):
        raise ValueError("the ground truth must be an object")
    unknown = set(data) - {
        "seed", "arms", "base_purchase", "default_arm", "default_base_purchase", "delays",
    }
    if unknown:
        raise ValueError(f"unknown ground-truth keys: {sorted(unknown)}")
    fallback = default_truth()
    arms_in = data.get("arms", fallback.to_json()["arms"])
    if not isinstance(arms_in, dict):
        raise ValueError("arms must map trigger types to variants")
    arms: dict[str, dict[str, Arm]] = {}
    for trigger, variants in arms_in.items():
        if not isinstance(variants, dict) or not variants:
            raise ValueError(f"arms.{trigger} must map variants to propensities")
        arms[str(trigger)] = {
            str(v): _arm(p, f"arms.{trigger}.{v}") for v, p in variants.items()
        }
    base_in = data.get("base_purchase", fallback.base_purchase)
    if not isinstance(base_in, dict):
        raise ValueError("base_purchase must map trigger types to rates")
    base = {str(t): _probability(p, f"base_purchase.{t}") for t, p in base_in.items()}
    delays = dict(fallback.delays)
    delays_in = data.get("delays", {})
    if not isinstance(delays_in, dict):
        raise ValueError("delays must map open / click / purchase to [low, high]")
    for kind, pair in delays_in.items():
        if kind not in KINDS:
            raise ValueError(f"delays.{kind}: not one of {', '.join(KINDS)}")
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"delays.{kind} must be [low, high]")
        low, high = (parse_duration(x) for x in pair)
        if not 0 < low <= high:
            raise ValueError(f"delays.{kind}: need 0 < low <= high, got {low}, {high}")
        delays[kind] = (low, high)
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError("seed must be an integer")
    return GroundTruth(
        arms=arms,
        base_purchase=base,
        default_arm=_arm(data.get("default_arm", vars(fallback.default_arm)), "default_arm"),
        default_base_purchase=_probability(
            data.get("default_base_purchase", fallback.default_base_purchase),
            "default_base_purchase",
        ),
        delays=delays,
        seed=seed,
    )


def load_truth(path: Path) -> GroundTruth:
    """A ground truth from a .json or .toml file (see truth_from_json)."""
    text = Path(path).read_bytes()
    data = tomllib.loads(text.decode()) if str(path).endswith(".toml") else json.loads(text)
    return truth_from_json(data)


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: not a number: {value!r}")
    p = float(value)
    if not 0.0 <= p <= 1.0:  # also refuses NaN
        raise ValueError(f"{where}: {p} is not a probability in [0, 1]")
    return p


def _arm(value: Any, where: str) -> Arm:
    if not isinstance(value, dict) or set(value) != set(KINDS):
        raise ValueError(f"{where} must have exactly open, click, purchase")
    arm = Arm(**{k: _probability(value[k], f"{where}.{k}") for k in KINDS})
    if arm.click > arm.open:
        raise ValueError(f"{where}: click {arm.click} > open {arm.open} (a click is an open)")
    return arm


# ------------------------------------------------------------------ sends and answers


@dataclass(frozen=True, order=True)
class Send:
    """One decision of the job to answer: an email sent (variant set) or held out (None).

    `at` is when the customer can see it: the payload's send_after, else its fire time.
    """

    message_id: str
    customer_id: str
    trigger: str
    variant: str | None
    fired_at: int
    at: int
    campaign: str | None = None  # the payload's, which the answers' email events carry

    @property
    def holdout(self) -> bool:
        """Held out: the customer got no email."""
        return self.variant is None


def read_sends(out_dir: Path) -> list[Send]:
    """The sends of a replay output dir: its payloads, and its `suppressed:holdout` audits."""
    sends = []
    out_dir = Path(out_dir)
    for row in _jsonl(out_dir / "payloads.jsonl"):
        t = row["trigger"]
        fired = int(t["fired_at"])
        after = row.get("send_after")
        sends.append(Send(row["message_id"], row["customer_id"], t["type"], row["variant"],
                          fired, max(fired, int(after)) if after is not None else fired,
                          row.get("campaign")))
    for row in _jsonl(out_dir / "audit.jsonl"):
        if row["decision"] != HOLDOUT_DECISION:
            continue
        fired = int(row["fired_at"])
        mid = row.get("message_id") or derive_message_id(
            row["customer_id"], row["type"], row["key"], fired
        )
        sends.append(Send(mid, row["customer_id"], row["type"], None, fired, fired))
    return sorted(sends)


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


class Responder:
    """Answers sends from a ground truth: each the same on every call, for every policy."""

    def __init__(self, truth: GroundTruth) -> None:
        self.truth = truth
        self.catalog: list[CatalogProduct] = build_catalog()

    def unit(self, message_id: str, what: str) -> float:
        """A uniform draw in [0, 1) of (seed, message, what)."""
        digest = hashlib.sha256(f"{self.truth.seed}\x00{message_id}\x00{what}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def _delay(self, message_id: str, kind: str) -> int:
        low, high = self.truth.delays[kind]
        return low + int(self.unit(message_id, f"delay:{kind}") * (high - low + 1))

    def _id(self, message_id: str, kind: str) -> str:
        text = f"{self.truth.seed}\x00{message_id}\x00id:{kind}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def outcomes(self, send: Send) -> dict[str, bool]:
        """Which of open / click / purchase `send` gets (a held-out one: only a purchase)."""
        u = self.unit(send.message_id, "engage")
        w = self.unit(send.message_id, "purchase")
        if send.variant is None:
            return {"open": False, "click": False, "purchase": w < self.truth.base(send.trigger)}
        arm = self.truth.arm(send.trigger, send.variant)
        return {"open": u < arm.open, "click": u < arm.click, "purchase": w < arm.purchase}

    def answer(self, send: Send) -> list[BehaviourEvent]:
        """The events of `send`'s answers, in time order."""
        got = self.outcomes(send)
        mid, cid = send.message_id, send.customer_id
        session = self._id(mid, "session")
        campaign = send.campaign or send.trigger
        out: list[BehaviourEvent] = []
        t = send.at
        if got["open"]:
            t += self._delay(mid, "open")
            out.append(BehaviourEvent(self._id(mid, "open"), cid, EMAIL_OPEN, t, session,
                                      email_message_id=mid, email_campaign=campaign))
            if got["click"]:
                t += self._delay(mid, "click")
                out.append(BehaviourEvent(self._id(mid, "click"), cid, EMAIL_CLICK, t, session,
                                          email_message_id=mid, email_campaign=campaign))
        if got["purchase"]:
            t += self._delay(mid, "purchase")
            p = self.catalog[int(self.unit(mid, "product") * len(self.catalog))]
            product = Product(p.product_id, p.category, p.brand or None, p.price)
            out.append(BehaviourEvent(self._id(mid, "purchase"), cid, PURCHASE, t, session,
                                      product=product, quantity=1,
                                      order_id=f"order-{self._id(mid, 'order')[:16]}",
                                      order_total=p.price))
        return out

    def answers(self, sends: Sequence[Send]) -> list[BehaviourEvent]:
        """Every answer to `sends`, by (time, event id)."""
        events = [ev for s in sends for ev in self.answer(s)]
        events.sort(key=lambda ev: (ev.occurred_at, ev.event_id))
        return events


def merge(base: Sequence[Generated], answers: Sequence[BehaviourEvent]) -> Iterator[Generated]:
    """`base` in its arrival order with each answer (time-sorted) just before the first base
    item later than it: nothing read before an answer is later than the answer."""
    i, n = 0, len(answers)
    for item in base:
        t = item.event.occurred_at if isinstance(item, Malformed) else event_time(item)
        while i < n and answers[i].occurred_at < t:
            yield answers[i]
            i += 1
        yield item
    yield from answers[i:]


# ------------------------------------------------------------------ closing the loop


@dataclass
class Loop:
    """A closed loop: the answers in the traffic are the answers to the sends of its replay."""

    answers: list[BehaviourEvent]
    sends: list[Send]
    rounds: int
    converged: bool
    out_dir: Path  # the reference runner's outputs of the last round

    def items(self, base: Sequence[Generated]) -> Iterator[Generated]:
        """The traffic: `base` with the answers merged in."""
        return merge(base, self.answers)

    def counts(self) -> dict[str, Any]:
        """Sends and answers by kind, rounds and whether the loop converged."""
        kinds = {EMAIL_OPEN: "opens", EMAIL_CLICK: "clicks", PURCHASE: "purchases"}
        c: dict[str, Any] = {"sends": sum(not s.holdout for s in self.sends),
                             "held_out": sum(s.holdout for s in self.sends),
                             "opens": 0, "clicks": 0, "purchases": 0}
        for ev in self.answers:
            c[kinds[ev.event_type]] += 1
        c.update(loop_rounds=self.rounds, loop_converged=self.converged)
        return c


def longest_deferral(settings: Settings) -> int:
    """The longest quiet-hours deferral of a send after its fire (transforms/policy.py),
    with an hour for a daylight-saving change inside the quiet hours."""
    core = settings.core
    hours = (core.quiet_end_hour - core.quiet_start_hour) % 24
    return (hours + 1) * HOUR if hours else 0


def close_loop(
    base: Sequence[Generated],
    truth: GroundTruth,
    settings: Settings,
    work_dir: Path,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    on_round: Callable[[int, int], None] | None = None,
) -> Loop:
    """Replay `base` plus answers through the reference runner until sends stop changing.

    `work_dir` gets input.jsonl (the last round's input) and out/ (its outputs). `on_round`
    is told (round, sends) after each round.
    """
    from pipelines.reference import run_replay
    from transforms.readers import read_events_jsonl

    if max_rounds < 2:
        raise ValueError("max_rounds must be at least 2 (one without answers, one with)")
    window = getattr(settings.core, "attribution_window", DEFAULT_ATTRIBUTION_WINDOW)
    latest = truth.max_delay() + longest_deferral(settings)
    if latest >= window:
        raise ValueError(f"answers may come {latest} ms after a fire (quiet hours included), "
                         f"not within the attribution window ({window} ms): shorten the delays")
    responder = Responder(truth)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path, out_dir = work_dir / "input.jsonl", work_dir / "out"
    answers: list[BehaviourEvent] = []
    previous: list[Send] | None = None
    for n in range(1, max_rounds + 1):
        with path.open("w", encoding="utf-8") as fh:
            for item in merge(base, answers):
                fh.write(jsonl_line(item))
                fh.write("\n")
        run_replay(read_events_jsonl(path, False, settings.core), settings, out_dir)
        sends = read_sends(out_dir)
        if on_round is not None:
            on_round(n, len(sends))
        if sends == previous:
            return Loop(answers, sends, n, True, out_dir)
        previous, answers = sends, responder.answers(sends)
    assert previous is not None
    return Loop(answers, previous, max_rounds, False, out_dir)


# ------------------------------------------------------------ personalize generate --responses


def variant_policy(settings: Settings) -> str:
    """The job's variant policy as the settings name it (before core.variant_policy existed,
    variants were a hash split of customers)."""
    return str(getattr(settings.core, "variant_policy", "hash split (no core.variant_policy)"))


def generate_with_responses(args: argparse.Namespace, settings: Settings) -> int:
    """`personalize generate --responses`: the traffic, its answers, OUT.truth.json."""
    from runners.generate import traffic_config, write_file
    from runners.progress import Progress

    if args.to != "file" or args.format not in ("jsonl", "avro"):
        print("generate: --responses needs --to file with --format jsonl or avro (rees46 "
              "cannot hold email events)", file=sys.stderr)
        return 2
    try:
        truth = load_truth(args.truth) if args.truth is not None else default_truth()
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"generate: --truth {args.truth}: {exc}", file=sys.stderr)
        return 2
    try:
        traffic = Traffic(traffic_config(args))
    except ValueError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    progress = Progress("generate")
    base = list(traffic)
    with tempfile.TemporaryDirectory(prefix="ground-truth-") as tmp:
        try:
            loop = close_loop(
                base, truth, settings, Path(tmp), args.loop_rounds,
                on_round=lambda n, s: print(f"generate: loop round {n}: {s} sends",
                                            file=sys.stderr, flush=True),
            )
        except ValueError as exc:
            print(f"generate: {exc}", file=sys.stderr)
            return 2
    written = write_file(loop.items(base), args.format, args.out, progress)
    truth_path = Path(f"{args.out}.truth.json")
    record = {**truth.to_json(), "variant_policy": variant_policy(settings), "loop": loop.counts()}
    truth_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    counts = {**traffic.counts, **written, **loop.counts(), "truth": str(truth_path),
              "seconds": round(progress.done(), 3)}
    print(json.dumps(counts))
    if not loop.converged:
        print(f"generate: the loop did not converge in {loop.rounds} rounds: the answers in "
              f"{args.out} are those to the previous round's sends (raise --loop-rounds)",
              file=sys.stderr)
        return 1
    return 0
