"""The bandit scenario's arithmetic on hand-made sends, and the scenario at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.bench import Row, Target
from runners.bench.bandit import (
    POLICY_SETTING,
    best_fixed_variant,
    expected_regret,
    has_setting,
    period_edges,
    regret_curve,
    score,
)
from runners.cli import main
from runners.ground_truth import Arm, GroundTruth, Send, default_truth
from tests.builders import HOUR, T0

CART, BROWSE = "cart_abandonment", "browse_intensity"
T1, T2 = T0 + HOUR, T0 + 2 * HOUR


def send(n: int, trigger: str, variant: str | None, fired_at: int = T0) -> Send:
    return Send(f"m{n}", f"c{n}", trigger, variant, fired_at, fired_at)


def test_expected_regret_is_best_minus_chosen_per_trigger() -> None:
    truth = default_truth()  # clicks: cart a .03, b .08; browse a .06, b .02
    sends = [send(1, CART, "a"), send(2, CART, "b"), send(3, BROWSE, "b"), send(4, BROWSE, "a"),
             send(5, CART, None)]  # held out: chooses nothing, costs nothing
    assert expected_regret(sends, truth) == pytest.approx(0.05 + 0.0 + 0.04 + 0.0)
    assert expected_regret(sends, truth, "open") == pytest.approx(0.05 + 0.05)


def test_an_unknown_variant_costs_against_the_default_arm_and_never_goes_negative() -> None:
    truth = GroundTruth({CART: {"a": Arm(0.5, 0.01, 0)}}, {}, default_arm=Arm(0.5, 0.02, 0))
    assert expected_regret([send(1, CART, "zz")], truth) == 0.0  # better than the best named
    assert expected_regret([send(1, CART, "a")], truth) == 0.0
    assert expected_regret([send(1, "other_trigger", "a")], truth) == 0.0
    worse = GroundTruth({CART: {"a": Arm(0.5, 0.05, 0)}}, {}, default_arm=Arm(0.5, 0.02, 0))
    assert expected_regret([send(1, CART, "zz")], worse) == pytest.approx(0.03)


def test_regret_curve_counts_sends_before_each_edge_not_at_it() -> None:
    truth = default_truth()
    sends = [send(1, CART, "a", T0), send(2, CART, "a", T1 - 1), send(3, CART, "a", T1),
             send(4, CART, "b", T1 + 1), send(5, CART, "a", T2)]
    curve = regret_curve(sends, truth, [T0, T0 + 1, T1, T1 + 1, T2 + 1])
    assert curve == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])
    assert regret_curve([], truth, [T0, T1]) == [0.0, 0.0]


def test_period_edges_split_the_run_and_include_the_last_send() -> None:
    sends = [send(1, CART, "a", T0), send(2, CART, "a", T0 + 4 * HOUR - 1)]
    edges = period_edges(sends)
    assert edges == [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 4 * HOUR]
    assert regret_curve(sends, default_truth(), edges)[-1] == pytest.approx(0.10)
    assert period_edges([]) == []
    assert period_edges([send(1, CART, "a", T0)], 2) == [T0, T0 + 1]


def test_best_fixed_variant_weighs_the_triggers_by_their_sends() -> None:
    truth = default_truth()
    cart_heavy = [send(i, CART, "a") for i in range(10)] + [send(99, BROWSE, "a")]
    browse_heavy = [send(i, BROWSE, "b") for i in range(10)] + [send(99, CART, "a")]
    assert best_fixed_variant(cart_heavy, truth) == "b"
    assert best_fixed_variant(browse_heavy, truth) == "a"
    tie = GroundTruth({CART: {"b": Arm(0.1, 0.05, 0), "a": Arm(0.1, 0.05, 0)}}, {})
    assert best_fixed_variant([send(1, CART, "b")], tie) == "a"
    with pytest.raises(ValueError, match="no variant"):
        best_fixed_variant([], GroundTruth({}, {}))


def test_score_counts_sends_holdout_clicks_and_allocation() -> None:
    always = GroundTruth({CART: {"a": Arm(1, 1, 0), "b": Arm(1, 0, 0)}}, {CART: 1.0})
    sends = [send(1, CART, "a", T0), send(2, CART, "b", T1), send(3, CART, "b", T1),
             send(4, CART, None, T1)]
    s = score(sends, always, [T1, T2])
    assert (s["sends"], s["held_out"], s["clicks"], s["expected_clicks"]) == (3, 1, 1, 1.0)
    assert s["regret"] == 2.0 and s["regret_by_period"] == [0.0, 2.0]
    assert s["clicks_by_period"] == [1, 1]  # only `a` clicks; the holdout never does
    assert s["allocation"] == {CART: {"a": 1, "b": 2}}


def test_a_strict_target_fails_on_equality() -> None:
    target = Target("ratio", "<", 1.0, "< uniform split")
    assert Row("bandit", "m", 5.0, "clicks", baseline=5.0, target=target).passed is False
    assert Row("bandit", "m", 4.9, "clicks", baseline=5.0, target=target).passed is True


def test_the_scenario_reports_every_policy_or_why_not(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "--only", "bandit", "--scale", "0.05", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["scenarios"]["bandit"]["status"] == "ok"
    rows = {r["metric"].split(": cumulative")[0]: r for r in report["rows"]
            if r["metric"].endswith("cumulative expected regret")}
    details = report["scenarios"]["bandit"]["details"]
    fixed = f"fixed:{details['best_fixed']}"
    assert "thompson" in rows and fixed in rows
    if has_setting(POLICY_SETTING):
        assert rows["thompson"]["value"] is not None
        assert rows["uniform"]["value"] == details["policies"]["uniform"]["regret"]
    else:
        assert rows["thompson"]["value"] is None
        assert "not available (core.variant_policy missing)" in rows["thompson"]["note"]
        assert rows["uniform (hash split)"]["value"] is not None
    uniform = details["policies"][next(iter(details["policies"]))]
    assert uniform["sends"] > 0 and uniform["converged"]
    assert len(uniform["regret_by_period"]) == 4
