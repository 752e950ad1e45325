"""The learning-loop section of the report: intervals against published values, counts on a
hand-made run directory, and directories without outcomes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from xml.etree import ElementTree

import pytest

from runners.report import write_report
from runners.report_learning import allocation, allocation_svg, newcombe, relative_lift, wilson
from tests.builders import HOUR, MINUTE, T0
from transforms.payload import message_id

CART, BROWSE = "cart_abandonment", "browse_intensity"


# ------------------------------------------------------------------ intervals


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (score, no correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_intervals(x: int, n: int, low: float, high: float) -> None:
    got = wilson(x, n)
    assert got is not None
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_of_nothing_is_none_and_of_impossible_counts_an_error() -> None:
    assert wilson(0, 0) is None
    assert wilson(5, 5) == pytest.approx((0.5655, 1.0), abs=1e-4)  # all successes: upper is 1
    with pytest.raises(ValueError):
        wilson(6, 5)
    with pytest.raises(ValueError):
        wilson(-1, 5)


@pytest.mark.parametrize(
    ("x1", "n1", "x0", "n0", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10 (hybrid score)
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
    ],
)
def test_newcombe_matches_published_intervals(
    x1: int, n1: int, x0: int, n0: int, low: float, high: float
) -> None:
    got = newcombe(x1, n1, x0, n0)
    assert got is not None
    assert got[0] == pytest.approx(x1 / n1 - x0 / n0)
    assert got[1:] == pytest.approx((low, high), abs=1e-4)


def test_newcombe_of_an_empty_group_is_none() -> None:
    assert newcombe(1, 10, 0, 0) is None and newcombe(0, 0, 1, 10) is None


@pytest.mark.parametrize(("x1", "n1", "x0", "n0"), [(5, 56, 0, 29), (0, 10, 0, 20), (10, 10, 0, 20),
                                                   (6, 7, 2, 7), (0, 1, 1, 1)])
def test_newcombe_holds_the_difference_within_the_wilson_bounds(
    x1: int, n1: int, x0: int, n0: int
) -> None:
    got = newcombe(x1, n1, x0, n0)
    a, b = wilson(x1, n1), wilson(x0, n0)
    assert got is not None and a is not None and b is not None
    d, low, high = got
    assert low <= d <= high
    assert a[0] - b[1] - 1e-12 <= low and high <= a[1] - b[0] + 1e-12  # never wider than those
    assert -1.0 <= low and high <= 1.0


def test_relative_lift_uses_the_log_ratio_interval() -> None:
    # 20 / 100 against 10 / 100: ratio 2, se = sqrt(1/20 - 1/100 + 1/10 - 1/100) = sqrt(0.13)
    spread = math.exp(1.959963984540054 * math.sqrt(0.13))  # 2.0273
    got = relative_lift(20, 100, 10, 100)
    assert got == pytest.approx((1.0, 2 / spread - 1, 2 * spread - 1))
    assert got[1] == pytest.approx(-0.0134, abs=1e-4) and got[2] == pytest.approx(3.0545, abs=1e-4)
    assert relative_lift(5, 100, 0, 100) is None  # no holdout conversion: undefined
    assert relative_lift(0, 100, 5, 100) is None


# ------------------------------------------------------------------ a hand-made run directory


def payload(mid: str, trigger: str, variant: str, fired_at: int = T0) -> dict:
    return {"message_id": mid, "customer_id": f"c-{mid}", "variant": variant, "subject": "s",
            "html": "<p>x</p>", "trigger": {"type": trigger, "key": "k", "fired_at": fired_at}}


def outcome(mid: str, kind: str, value: float = 0.0, holdout: bool = False) -> dict:
    return {"message_id": mid, "customer_id": "c", "trigger_type": CART, "variant": None,
            "kind": kind, "value": value, "occurred_at": T0 + HOUR, "fired_at": T0,
            "holdout": holdout, "event_id": f"e-{mid}-{kind}"}


def write_dir(path: Path, payloads: list[dict], audit: list[dict], outcomes: list | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"payloads": len(payloads)}))
    (path / "payloads.jsonl").write_text("".join(json.dumps(p) + "\n" for p in payloads))
    (path / "audit.jsonl").write_text("".join(json.dumps(a) + "\n" for a in audit))
    if outcomes is not None:
        (path / "outcomes.jsonl").write_text(
            "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in outcomes)
        )


def section(page: str) -> str:
    return page.split("<h2>Learning loop")[1].split("<h2>Sample emails")[0]


def held(cid: str, fired_at: int, mid: str | None) -> dict:
    return {"customer_id": cid, "type": CART, "key": "k", "fired_at": fired_at,
            "decision": "suppressed:holdout", "message_id": mid}


def test_the_report_counts_distinct_messages_revenue_and_the_holdout(tmp_path: Path) -> None:
    payloads = [payload(f"m{i}", CART, "a") for i in range(1, 5)]
    payloads += [payload("m5", CART, "b"), payload("m6", CART, "b")]
    payloads.append(payload("x1", "<script>alert(1)</script>", "b"))
    audit = [held("h1", T0, "h1"), held("h2", T0 + 1, None), held("h3", T0 + 2, "h3"),
             {"customer_id": "c9", "type": CART, "key": "k", "fired_at": T0,
              "decision": "suppressed:cap", "message_id": None}]
    derived = message_id("h2", CART, "k", T0 + 1)  # an audit without an id: derived
    outcomes = [
        outcome("m1", "open"), outcome("m1", "open"), outcome("m1", "click"),
        outcome("m1", "purchase", 50.0), outcome("m2", "open"),
        outcome("m5", "purchase", 20.0), outcome("m5", "purchase", 5.5),
        outcome("h1", "purchase", 10.0, holdout=True), outcome(derived, "purchase", 1.0, True),
        outcome("not-ours", "purchase", 999.0),
        "{not json", json.dumps({**outcome("m3", "purchase"), "value": math.nan}),
        json.dumps({**outcome("m4", "purchase"), "kind": "bounce"}),
        json.dumps(outcome("m4", "purchase", -5.0)),
    ]
    write_dir(tmp_path, payloads, audit, outcomes)
    s = section(write_report(tmp_path).read_text())
    a_open = wilson(2, 4)
    assert a_open is not None
    assert (f"<td>{CART}</td><td>a</td><td>4</td><td>2</td><td>1</td><td>1</td><td>50.00</td>"
            f"<td>50.00 % ({100 * a_open[0]:.2f} - {100 * a_open[1]:.2f})</td>") in s
    assert f"<td>{CART}</td><td>b</td><td>2</td><td>0</td><td>0</td><td>1</td><td>25.50</td>" in s
    assert (f"<td>{CART}</td><td>(holdout)</td><td>3</td><td>-</td><td>-</td><td>2</td>"
            "<td>11.00</td>") in s
    # Lift: emails 2 / 6 against holdout 2 / 3.
    d = newcombe(2, 6, 2, 3)
    r = relative_lift(2, 6, 2, 3)
    assert d is not None and r is not None
    assert (f"<td>2 / 6</td><td>2 / 3</td><td>{100 * d[0]:+.2f} ({100 * d[1]:+.2f} to "
            f"{100 * d[2]:+.2f})</td><td>{100 * r[0]:+.1f} % ") in s
    assert "1 outcomes name messages this run did not send" in s
    assert "4 unreadable lines of outcomes.jsonl skipped" in s
    assert "<script>" not in s and "&lt;script&gt;alert(1)&lt;/script&gt;" in s
    assert s.count("<svg") == 2  # one allocation plot per trigger that sent


def test_a_directory_without_outcomes_says_so(tmp_path: Path) -> None:
    write_dir(tmp_path, [payload("m1", CART, "a"), payload("m2", CART, "b")], [], None)
    s = section(write_report(tmp_path).read_text())
    assert "<em>no outcomes</em>" in s
    assert f"<td>{CART}</td><td>a</td><td>1</td><td>-</td>" in s
    assert "Lift against the holdout" not in s and s.count("<svg") == 1


def test_a_run_that_sent_nothing_says_so(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    s = section(write_report(tmp_path).read_text())
    assert "<em>no sends</em>" in s and "<svg" not in s


def test_holdout_without_conversions_shows_no_relative_lift(tmp_path: Path) -> None:
    write_dir(tmp_path, [payload("m1", CART, "a")], [held("h1", T0, "h1")],
              [outcome("m1", "purchase", 3.0)])
    s = section(write_report(tmp_path).read_text())
    d = newcombe(1, 1, 0, 1)
    assert d is not None
    assert f"<td>1 / 1</td><td>0 / 1</td><td>{100 * d[0]:+.2f} (" in s
    assert s.split("<td>0 / 1</td>")[1].split("</tr>")[0].endswith("<td>-</td>")


# ------------------------------------------------------------------ allocation over time


def test_allocation_bins_are_hours_and_widen_for_long_runs() -> None:
    sends = [(CART, "a", T0), (CART, "b", T0 + 59 * MINUTE), (CART, "b", T0 + HOUR),
             (BROWSE, "a", T0 + 5 * HOUR)]
    start, width, bins = allocation(sends, CART)
    assert (start, width) == (T0, HOUR)
    assert bins == [{"a": 1, "b": 1}, {"b": 1}]
    long = [(CART, "a", T0), (CART, "b", T0 + 100 * HOUR)]
    start, width, bins = allocation(long, CART)
    assert width == 3 * HOUR and len(bins) == 34 and len(bins) <= 48
    assert bins[0] == {"a": 1} and bins[-1] == {"b": 1}
    assert allocation(sends, "other") == (0, HOUR, [])


def test_allocation_svg_stacks_shares_and_escapes_variant_names() -> None:
    sends = [(CART, "a", T0), (CART, "a", T0 + 1), (CART, "a", T0 + 2),
             (CART, "<b>&", T0 + 3)]
    svg = allocation_svg(sends, CART)
    assert svg.count("<rect") == 2 + 2  # two stacked parts, two legend swatches
    assert "height='120.00'" in svg and "height='40.00'" in svg  # 3 of 4, 1 of 4 (of 160)
    assert "a: 3 of 4 sends" in svg and "&lt;b&gt;&amp;: 1 of 4 sends" in svg
    assert "<b>" not in svg
    root = ElementTree.fromstring(svg)  # well-formed XML, whatever the names held
    assert root.tag.endswith("svg") and root.get("aria-label") == CART


def test_allocation_svg_survives_a_hostile_trigger_name() -> None:
    hostile = "x' onload='alert(1)\"<script>&"
    svg = allocation_svg([(hostile, "a", T0)], hostile)
    root = ElementTree.fromstring(svg)
    assert root.get("aria-label") == hostile and root.get("onload") is None
    assert "<script>" not in svg
