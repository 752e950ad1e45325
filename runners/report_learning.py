"""The learning-loop section of the run report (runners/report.py): did the emails work?

    DIR/payloads.jsonl (sends: message_id, trigger type and fire time, variant)
    DIR/audit.jsonl    (held-out triggers: decision suppressed:holdout)
    DIR/outcomes.jsonl (optional: opens, clicks, purchases attributed to a message)
        -> an HTML section: per trigger and variant sent, opens, clicks, conversions, revenue
           and their rates with 95 % Wilson score intervals; per trigger the holdout and the
           lift of the emails on the conversion rate; the variants' share of sends over time
           (inline SVG, stacked bars)

Counting. An outcome counts for the message it names, under the trigger and variant of that
message's payload (or as held out, for a message of a suppressed:holdout audit); outcomes of
messages the directory does not hold are counted apart, never guessed. Opens, clicks and
conversions count distinct messages (a message opened twice is one open); revenue sums every
purchase value. Unreadable outcome lines (not JSON, an unknown kind, no message id, a value
that is not a finite number >= 0) are skipped and counted.

Intervals (z = 1.96). A rate's: Wilson's score interval. The lift: the difference of
conversion rates, emails (all variants) minus holdout, with Newcombe's hybrid score interval
(Newcombe 1998, method 10: Wilson intervals of both rates combined); the relative lift
(ratio - 1) with the log-ratio (Katz) interval, shown only when both groups converted.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transforms.payload import message_id as derive_message_id
from transforms.settings import HOUR

Z95 = 1.959963984540054
HOLDOUT_DECISION = "suppressed:holdout"
KINDS = ("open", "click", "purchase")
HOLDOUT_ROW = "(holdout)"  # no variant name has parentheses (transforms/render.py)
MAX_BINS = 48  # bars in an allocation plot: hours, or wider bins for longer runs
_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
            "#ff9da7", "#9c755f", "#bab0ac")


# ------------------------------------------------------------------ intervals


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson's score interval of x successes in n trials (None when n is 0)."""
    if n <= 0:
        return None
    if not 0 <= x <= n:
        raise ValueError(f"need 0 <= x <= n, got x={x}, n={n}")
    p = x / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(
    x1: int, n1: int, x0: int, n0: int, z: float = Z95
) -> tuple[float, float, float] | None:
    """p1 - p0 with Newcombe's hybrid score interval (None when a group is empty)."""
    a, b = wilson(x1, n1, z), wilson(x0, n0, z)
    if a is None or b is None:
        return None
    p1, p0 = x1 / n1, x0 / n0
    d = p1 - p0
    low = d - math.sqrt((p1 - a[0]) ** 2 + (b[1] - p0) ** 2)
    high = d + math.sqrt((a[1] - p1) ** 2 + (p0 - b[0]) ** 2)
    return d, low, high


def relative_lift(
    x1: int, n1: int, x0: int, n0: int, z: float = Z95
) -> tuple[float, float, float] | None:
    """p1 / p0 - 1 with the log-ratio (Katz) interval; None when either group has no success
    (the log ratio is then undefined)."""
    if n1 <= 0 or n0 <= 0 or x1 <= 0 or x0 <= 0:
        return None
    ratio = (x1 / n1) / (x0 / n0)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
    return ratio - 1, ratio * math.exp(-z * se) - 1, ratio * math.exp(z * se) - 1


# ------------------------------------------------------------------ counting


@dataclass
class Tally:
    """One (trigger, variant) or one trigger's holdout: sends and the messages' outcomes."""

    sent: int = 0
    opened: set[str] = field(default_factory=set)
    clicked: set[str] = field(default_factory=set)
    converted: set[str] = field(default_factory=set)
    revenue: float = 0.0


@dataclass
class Learning:
    """What the section shows, counted from a run's files."""

    arms: dict[tuple[str, str], Tally]        # (trigger, variant) -> tally
    holdout: dict[str, Tally]                  # trigger -> tally
    sends: list[tuple[str, str, int]]          # (trigger, variant, fired_at) of every payload
    has_outcomes: bool
    unmatched: int = 0                         # outcomes of messages this run does not hold
    unreadable: int = 0                        # outcome lines that are not a valid outcome

    def triggers(self) -> list[str]:
        """Every trigger type that sent or held out, sorted."""
        return sorted({t for t, _ in self.arms} | set(self.holdout))


def read_outcomes(path: Path) -> tuple[list[dict[str, Any]], int] | None:
    """The valid outcome records of `path` and how many lines were not (None: no file)."""
    if not path.is_file():
        return None
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                bad += 1
                continue
            if _valid_outcome(row):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def _valid_outcome(row: Any) -> bool:
    if not isinstance(row, dict) or row.get("kind") not in KINDS:
        return False
    if not isinstance(row.get("message_id"), str):
        return False
    value = row.get("value", 0.0)
    if value is None:
        return True
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value) and value >= 0)


def count(
    payloads: Iterable[dict[str, Any]],
    audit: Iterable[dict[str, Any]],
    outcomes: Iterable[dict[str, Any]] | None,
    unreadable: int = 0,
) -> Learning:
    """Tally sends, holdouts and outcomes (None: the run wrote no outcomes file)."""
    arms: dict[tuple[str, str], Tally] = {}
    holdout: dict[str, Tally] = {}
    owner: dict[str, Tally] = {}
    sends = []
    for p in payloads:
        trigger, variant = str(p["trigger"]["type"]), str(p.get("variant"))
        tally = arms.setdefault((trigger, variant), Tally())
        tally.sent += 1
        owner[p["message_id"]] = tally
        sends.append((trigger, variant, int(p["trigger"]["fired_at"])))
    for a in audit:
        if a.get("decision") != HOLDOUT_DECISION:
            continue
        tally = holdout.setdefault(str(a["type"]), Tally())
        tally.sent += 1
        mid = a.get("message_id") or derive_message_id(
            a["customer_id"], a["type"], a["key"], a["fired_at"]
        )
        owner[mid] = tally
    learning = Learning(arms, holdout, sends, outcomes is not None, unreadable=unreadable)
    for o in outcomes or ():
        found = owner.get(o["message_id"])
        if found is None:
            learning.unmatched += 1
            continue
        tally = found
        mid, kind = o["message_id"], o["kind"]
        if kind == "open":
            tally.opened.add(mid)
        elif kind == "click":
            tally.clicked.add(mid)
        else:
            tally.converted.add(mid)
            tally.revenue += float(o.get("value") or 0.0)
    return learning


# ------------------------------------------------------------------ HTML


def learning_section(
    out_dir: Path, payloads: Sequence[dict[str, Any]], audit: Sequence[dict[str, Any]]
) -> str:
    """The section's HTML for a run directory (its payloads and audit already read)."""
    read = read_outcomes(Path(out_dir) / "outcomes.jsonl")
    outcomes, bad = read if read is not None else (None, 0)
    return render(count(payloads, audit, outcomes, bad))


def render(learning: Learning) -> str:
    """The section: outcome table, holdout and lift table, allocation plots."""
    parts = ["<h2>Learning loop: outcomes per trigger and variant</h2>"]
    if not learning.arms and not learning.holdout:
        parts.append("<p><em>no sends</em></p>")
        return "\n".join(parts)
    if not learning.has_outcomes:
        parts.append("<p><em>no outcomes</em> (no outcomes.jsonl in this directory: a run "
                     "without the learning loop); sends only.</p>")
    parts.append(_outcome_table(learning))
    notes = []
    if learning.unmatched:
        notes.append(f"{learning.unmatched} outcomes name messages this run did not send or "
                     "hold out: not counted")
    if learning.unreadable:
        notes.append(f"{learning.unreadable} unreadable lines of outcomes.jsonl skipped")
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    if learning.has_outcomes:
        parts.append("<h3>Lift against the holdout (conversion rate)</h3>")
        parts.append(_lift_table(learning))
    parts.append("<h3>Variant allocation over time (share of sends)</h3>")
    parts += [allocation_svg(learning.sends, t) for t in learning.triggers()
              if any(s[0] == t for s in learning.sends)]
    return "\n".join(parts)


def _rate(x: int, n: int) -> str:
    ci = wilson(x, n)
    if ci is None:
        return "-"
    return f"{100 * x / n:.2f} % ({100 * ci[0]:.2f} - {100 * ci[1]:.2f})"


def _row(cells: Sequence[str]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def _outcome_table(learning: Learning) -> str:
    head = ["trigger", "variant", "sent", "opens", "clicks", "conversions", "revenue",
            "open rate (95 % CI)", "click rate (95 % CI)", "conversion rate (95 % CI)"]
    rows = []
    groups: list[tuple[str, str, Tally]] = [(t, v, a) for (t, v), a in learning.arms.items()]
    groups += [(t, HOLDOUT_ROW, h) for t, h in sorted(learning.holdout.items())]
    groups.sort(key=lambda g: (g[0], g[1] == HOLDOUT_ROW, g[1]))
    for trigger, variant, a in groups:
        if not learning.has_outcomes:
            rows.append(_row([trigger, variant, str(a.sent)] + ["-"] * 7))
            continue
        held = variant == HOLDOUT_ROW
        rows.append(_row([
            trigger, variant, str(a.sent),
            "-" if held else str(len(a.opened)), "-" if held else str(len(a.clicked)),
            str(len(a.converted)), f"{a.revenue:.2f}",
            "-" if held else _rate(len(a.opened), a.sent),
            "-" if held else _rate(len(a.clicked), a.sent),
            _rate(len(a.converted), a.sent),
        ]))
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    return f"<table class='learning'><tr>{h}</tr>{''.join(rows)}</table>"


def _lift_table(learning: Learning) -> str:
    head = ["trigger", "emails: conversions / sent", "holdout: conversions / held out",
            "lift (percentage points, 95 % CI, Newcombe)", "relative lift (95 % CI, log ratio)"]
    rows = []
    for trigger in learning.triggers():
        tallies = [a for (t, _), a in learning.arms.items() if t == trigger]
        x1, n1 = sum(len(a.converted) for a in tallies), sum(a.sent for a in tallies)
        held = learning.holdout.get(trigger, Tally())
        x0, n0 = len(held.converted), held.sent
        d = newcombe(x1, n1, x0, n0)
        r = relative_lift(x1, n1, x0, n0)
        diff = "-" if d is None else (
            f"{100 * d[0]:+.2f} ({100 * d[1]:+.2f} to {100 * d[2]:+.2f})")
        rel = "-" if r is None else f"{100 * r[0]:+.1f} % ({100 * r[1]:+.1f} to {100 * r[2]:+.1f})"
        rows.append(_row([trigger, f"{x1} / {n1}", f"{x0} / {n0}", diff, rel]))
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    return f"<table class='lift'><tr>{th}</tr>{''.join(rows)}</table>"


def allocation(
    sends: Sequence[tuple[str, str, int]], trigger: str
) -> tuple[int, int, list[dict[str, int]]]:
    """(first bin start, bin width ms, per bin: sends per variant) of `trigger`'s sends:
    hourly bins, widened to whole hours so that at most MAX_BINS cover the run."""
    times = [t for tr, _, t in sends if tr == trigger]
    if not times:
        return 0, HOUR, []
    start = min(times) // HOUR * HOUR
    span = max(times) - start + 1
    width = HOUR * max(1, math.ceil(span / (HOUR * MAX_BINS)))
    bins: list[dict[str, int]] = [{} for _ in range(math.ceil(span / width))]
    for tr, variant, t in sends:
        if tr == trigger:
            b = bins[(t - start) // width]
            b[variant] = b.get(variant, 0) + 1
    return start, width, bins


def allocation_svg(sends: Sequence[tuple[str, str, int]], trigger: str) -> str:
    """A stacked bar per bin: each variant's share of `trigger`'s sends in it."""
    start, width, bins = allocation(sends, trigger)
    variants = sorted({v for b in bins for v in b})
    colour = {v: _COLOURS[i % len(_COLOURS)] for i, v in enumerate(variants)}
    w, h, left, top, bottom = 640, 160, 40, 24, 28
    bar = (w - left - 10) / max(1, len(bins))
    esc = html.escape
    out = [f"<svg class='allocation' xmlns='http://www.w3.org/2000/svg' width='{w}' "
           f"height='{h + top + bottom}' role='img' aria-label='{esc(trigger, quote=True)}'>",
           f"<text x='{left}' y='16' font-size='13'>{esc(trigger)}: "
           f"{_hours(width)} bins</text>",
           f"<text x='4' y='{top + 8}' font-size='10'>100%</text>",
           f"<text x='4' y='{top + h}' font-size='10'>0%</text>"]
    for i, b in enumerate(bins):
        total = sum(b.values())
        y = float(top + h)
        for v in variants:
            n = b.get(v, 0)
            if not n:
                continue
            height = h * n / total
            y -= height
            label = f"{v}: {n} of {total} sends, bin from {_utc(start + i * width)}"
            out.append(f"<rect x='{left + i * bar:.2f}' y='{y:.2f}' width='{max(bar - 1, 0.5):.2f}'"
                       f" height='{height:.2f}' fill='{colour[v]}'>"
                       f"<title>{esc(label)}</title></rect>")
    end = start + len(bins) * width
    out.append(f"<text x='{left}' y='{top + h + 14}' font-size='10'>{_utc(start)}</text>")
    out.append(f"<text x='{w - 10}' y='{top + h + 14}' font-size='10' text-anchor='end'>"
               f"{_utc(end)}</text>")
    x = left
    for v in variants:
        out.append(f"<rect x='{x}' y='{top + h + 18}' width='10' height='10' "
                   f"fill='{colour[v]}'/><text x='{x + 14}' y='{top + h + 27}' "
                   f"font-size='10'>{esc(v)}</text>")
        x += 24 + 7 * min(len(v), 20)
    out.append("</svg>")
    return "".join(out)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hours(ms: int) -> str:
    return f"{ms // HOUR} h"
