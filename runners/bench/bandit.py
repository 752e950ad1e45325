"""The `bandit` scenario: the variant policies scored against a ground truth, same traffic.

    generated base traffic (Sizes.bandit_events) + runners/ground_truth.py default truth
        -> per policy (thompson, uniform, fixed:<best single variant>): the loop closed over
           the reference runner (ground_truth.close_loop) -> sends, realized clicks,
           cumulative expected regret, and that regret at the end of each quarter of the run

Expected regret of a send = p_best(trigger) - p(trigger, chosen variant), with p the ground
truth's click propensity (the bandit's default reward) and p_best the best variant of that
trigger: what choosing that variant cost in expected clicks, free of the draw's noise.
Held-out sends choose no variant and count in neither. Realized clicks are the draws
themselves (common random numbers: the same message draws the same, whatever the policy).
The best fixed arm is one variant for every trigger (`core.variant_policy=fixed:<v>`): the
one with the most expected clicks over the uniform split's sends. With per-trigger best
variants that differ, it has regret too; a per-trigger learner can beat it.

A policy the settings cannot express (no `core.variant_policy` in this build: variants are a
hash split of customers, which is what `uniform` then runs) is reported as not available,
never imitated.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.ground_truth import (
    DEFAULT_MAX_ROUNDS,
    GroundTruth,
    Responder,
    Send,
    close_loop,
    default_truth,
)
from runners.traffic import Traffic, TrafficConfig
from transforms.settings import CoreSettings, Settings

if TYPE_CHECKING:
    from runners.bench import Context, Outcome, Sizes

POLICY_SETTING = "variant_policy"
REWARD = "click"
RATE = 1.0  # events per second of event time: 30 000 events span about 8 hours
EVENTS_PER_CUSTOMER = 15
PERIODS = 4  # regret at the end of each quarter of the run


def has_setting(name: str) -> bool:
    """Whether this build's core settings have `name`."""
    return name in {f.name for f in dataclasses.fields(CoreSettings)}


def expected_regret(sends: Sequence[Send], truth: GroundTruth, kind: str = REWARD) -> float:
    """Sum over the sends that chose a variant of p_best(trigger) - p(trigger, variant)."""
    total = 0.0
    for s in sends:
        if s.variant is not None:
            total += _regret(s, truth, kind)
    return total


def _regret(s: Send, truth: GroundTruth, kind: str) -> float:
    assert s.variant is not None
    p = truth.arm(s.trigger, s.variant).get(kind)
    return max(truth.best(s.trigger, kind)[1], p) - p


def regret_curve(
    sends: Sequence[Send], truth: GroundTruth, edges: Sequence[int], kind: str = REWARD
) -> list[float]:
    """Cumulative expected regret of the sends fired before each of `edges` (ascending)."""
    out, total, i = [], 0.0, 0
    ordered = sorted((s for s in sends if s.variant is not None), key=lambda s: s.fired_at)
    for edge in edges:
        while i < len(ordered) and ordered[i].fired_at < edge:
            total += _regret(ordered[i], truth, kind)
            i += 1
        out.append(total)
    return out


def period_edges(sends: Sequence[Send], periods: int = PERIODS) -> list[int]:
    """The ends of `periods` equal spans from the first to just past the last fire time."""
    if not sends:
        return []
    first = min(s.fired_at for s in sends)
    last = max(s.fired_at for s in sends) + 1
    return [first + (last - first) * (k + 1) // periods for k in range(periods)]


def best_fixed_variant(sends: Sequence[Send], truth: GroundTruth, kind: str = REWARD) -> str:
    """The one variant with the most expected `kind` over `sends` (ties: first by name)."""
    variants = sorted({v for arms in truth.arms.values() for v in arms})
    if not variants:
        raise ValueError("the ground truth names no variant")

    def value(v: str) -> float:
        return sum(truth.arm(s.trigger, v).get(kind) for s in sends if s.variant is not None)

    return min(variants, key=lambda v: (-value(v), v))


def score(sends: Sequence[Send], truth: GroundTruth, edges: Sequence[int]) -> dict[str, Any]:
    """Sends, held out, realized and expected clicks, regret (total and cumulative at each
    of `edges`), realized clicks cumulative at each edge, and the sends per (trigger, variant)."""
    responder = Responder(truth)
    chosen = [s for s in sends if s.variant is not None]
    allocation: dict[str, dict[str, int]] = {}
    for s in chosen:
        assert s.variant is not None
        per = allocation.setdefault(s.trigger, {})
        per[s.variant] = per.get(s.variant, 0) + 1
    return {
        "sends": len(chosen),
        "held_out": len(sends) - len(chosen),
        "clicks": sum(responder.outcomes(s)[REWARD] for s in chosen),
        "expected_clicks": round(
            sum(truth.arm(s.trigger, s.variant).get(REWARD) for s in chosen if s.variant), 3
        ),
        "regret": round(expected_regret(chosen, truth), 3),
        "regret_by_period": [round(x, 3) for x in regret_curve(chosen, truth, edges)],
        "clicks_by_period": [
            sum(responder.outcomes(s)[REWARD] for s in chosen if s.fired_at < edge)
            for edge in edges
        ],
        "allocation": {t: dict(sorted(v.items())) for t, v in sorted(allocation.items())},
    }


def bandit_scenario(settings: Settings, sizes: Sizes, ctx: Context) -> Outcome:
    """Close the loop under each policy on the same traffic; rows of regret and clicks."""
    from runners.bench import Outcome, Row, Target

    truth = default_truth()
    cfg = TrafficConfig(events=sizes.bandit_events, rate=RATE, seed=17,
                        customers=max(10, sizes.bandit_events // EVENTS_PER_CUSTOMER))
    base = list(Traffic(cfg))
    outcome = Outcome()
    available = has_setting(POLICY_SETTING)
    runs: dict[str, dict[str, Any]] = {}

    def run(policy: str) -> dict[str, Any]:
        overrides = [f"core.{POLICY_SETTING}={policy}"] if available else []
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"bench-bandit-{policy.replace(':', '-')}-") as d:
            loop = close_loop(base, truth, settings.with_overrides(overrides), Path(d),
                              DEFAULT_MAX_ROUNDS,
                              on_round=lambda n, s: ctx.say(f"{policy}: round {n}, {s} sends"))
        if not loop.converged:
            outcome.errors.append(f"{policy}: the loop did not converge in {loop.rounds} rounds")
        return {"sends_list": loop.sends, "rounds": loop.rounds, "converged": loop.converged,
                "seconds": round(time.perf_counter() - started, 1)}

    uniform = run("uniform")
    # Quarters of the span of the sends the truth scores (its triggers' variants differ): the
    # other triggers' sends (a win-back 30 days on) would stretch the span past the traffic.
    edges = period_edges([s for s in uniform["sends_list"] if s.trigger in truth.arms])
    runs["uniform" if available else "uniform (hash split)"] = uniform
    best = best_fixed_variant(uniform["sends_list"], truth)
    missing = f"not available (core.{POLICY_SETTING} missing)"
    for policy in ("thompson", f"fixed:{best}"):
        if available:
            runs[policy] = run(policy)
        else:
            runs[policy] = {"unavailable": missing}
            outcome.notes.append(f"{policy}: {missing}")
    scored: dict[str, dict[str, Any]] = {}
    for policy, r in runs.items():
        if "unavailable" in r:
            scored[policy] = r
            continue
        scored[policy] = {**score(r.pop("sends_list"), truth, edges), **r}
    base_regret = scored[next(iter(scored))]["regret"]  # the uniform split
    for policy, s in scored.items():
        if "unavailable" in s:
            outcome.rows.append(Row("bandit", f"{policy}: cumulative expected regret", None,
                                    "clicks", note=s["unavailable"]))
            continue
        target = (Target("ratio", "<", 1.0, "< uniform split") if policy == "thompson" else None)
        outcome.rows.append(Row(
            "bandit", f"{policy}: cumulative expected regret", s["regret"], "clicks",
            baseline=base_regret or None, baseline_label="uniform split", target=target,
            note=f"{s['sends']} sends, {s['clicks']} clicks realized, "
                 f"{s['expected_clicks']} expected; regret by quarter {s['regret_by_period']}, "
                 f"clicks by quarter {s['clicks_by_period']}; "
                 f"{s['rounds']} loop rounds",
        ))
    for line in table(scored):
        ctx.say(line)
    outcome.details = {
        "truth": truth.to_json(), "traffic": dataclasses.asdict(cfg), "best_fixed": best,
        "period_edges": edges, "policies": scored, "reward": REWARD,
    }
    return outcome


def table(scored: dict[str, dict[str, Any]]) -> list[str]:
    """The policies side by side: sends, clicks, expected regret and regret per quarter."""
    lines = [f"{'policy':<22} {'sends':>6} {'clicks':>6} {'exp.clicks':>10} {'regret':>8}  "
             "regret at the end of each quarter"]
    for policy, s in scored.items():
        if "unavailable" in s:
            lines.append(f"{policy:<22} {s['unavailable']}")
            continue
        quarters = " ".join(f"{x:7.2f}" for x in s["regret_by_period"])
        lines.append(f"{policy:<22} {s['sends']:>6} {s['clicks']:>6} "
                     f"{s['expected_clicks']:>10.2f} {s['regret']:>8.2f}  {quarters}")
    return lines
