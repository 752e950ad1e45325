"""`personalize report DIR`: one HTML page about a run, from the files every runner writes.

    DIR/summary.json, payloads.jsonl, audit.jsonl, dead_letters.jsonl, timeline.json
    DIR/latencies.json (optional: [{"type": ..., "ms": ...}] measured by Kafka runs)
        -> DIR/report.html, DIR/report_*.png

The page shows counts per trigger and decision, consent changes, suppression reasons,
dead-letter reasons, throughput over time, a latency histogram when latencies were measured,
the learning loop (runners/report_learning.py: outcomes per trigger and variant from
DIR/outcomes.jsonl, lift against the holdout, variant allocation over time), and a few of the
rendered emails (in sandboxed iframes). Replays, demos and runs all call
`write_report`.
No personal data leaves the run's own files: the page shows what the payloads hold.
"""

from __future__ import annotations

import argparse
import html
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transforms.model import CONSENT_CHANGE
from transforms.settings import Settings

SAMPLES = 4


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `report` to the CLI."""
    p = sub.add_parser(
        "report",
        parents=parents,
        help="write an HTML report of a run's output directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "out_dir", type=Path, metavar="DIR", help="a run's output directory (with summary.json)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """CLI entry."""
    if not (args.out_dir / "summary.json").is_file():
        print(
            f"report: {args.out_dir}/summary.json not found: pass the --out DIR of a replay or run"
        )
        return 2
    print(f"report: {write_report(args.out_dir)}")
    return 0


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def write_report(out_dir: Path) -> Path:
    """Write DIR/report.html (and its PNGs); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(out_dir)
    summary = _read_json(out_dir / "summary.json", {})
    payloads = _read_jsonl(out_dir / "payloads.jsonl")
    audit = _read_jsonl(out_dir / "audit.jsonl")
    dead = _read_jsonl(out_dir / "dead_letters.jsonl")
    timeline = _read_json(out_dir / "timeline.json", [])
    latencies = _read_json(out_dir / "latencies.json", [])

    decisions = Counter((a["type"], a["decision"]) for a in audit if a["type"] != CONSENT_CHANGE)
    consents = Counter(a["decision"] for a in audit if a["type"] == CONSENT_CHANGE)
    reasons = Counter(
        a["decision"].split(":", 1)[1] for a in audit if a["decision"].startswith("suppressed:")
    )
    dead_reasons = Counter(d["reason"] for d in dead)
    figures: list[tuple[str, str]] = []

    if len(timeline) > 1:
        fig, ax = plt.subplots(figsize=(7, 3))
        xs = [t for t, _, _ in timeline[1:]]
        rates = []
        for (t0, n0, _), (t1, n1, _) in zip(timeline, timeline[1:], strict=False):
            rates.append((n1 - n0) / (t1 - t0) if t1 > t0 else 0.0)
        ax.plot(xs, rates, marker=".")
        ax.set_xlabel("wall seconds")
        ax.set_ylabel("input records / s")
        ax.set_title("Throughput over time")
        ax.grid(alpha=0.3)
        figures.append(("Throughput over time", _save(fig, out_dir / "report_throughput.png")))
    if decisions:
        fig, ax = plt.subplots(figsize=(7, 3))
        labels = [f"{t}\n{d}" for (t, d) in sorted(decisions)]
        ax.barh(labels, [decisions[k] for k in sorted(decisions)])
        ax.set_xlabel("fired triggers")
        ax.set_title("Decisions per trigger")
        fig.tight_layout()
        figures.append(("Decisions per trigger", _save(fig, out_dir / "report_decisions.png")))
    if latencies:
        fig, ax = plt.subplots(figsize=(7, 3))
        by_type: dict[str, list[float]] = {}
        for row in latencies:
            by_type.setdefault(row["type"], []).append(row["ms"])
        for kind, values in sorted(by_type.items()):
            ax.hist(values, bins=30, alpha=0.6, label=kind)
        ax.set_xlabel("ms")
        ax.set_ylabel("payloads")
        ax.set_title("Latency histogram")
        ax.legend()
        figures.append(("Latency", _save(fig, out_dir / "report_latency.png")))

    from runners.report_learning import learning_section

    page = _page(
        summary, decisions, consents, reasons, dead_reasons, figures, payloads[:SAMPLES], latencies,
        learning_section(out_dir, payloads, audit),
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _page(
    summary: dict[str, Any],
    decisions: Counter,
    consents: Counter,
    reasons: Counter,
    dead_reasons: Counter,
    figures: list[tuple[str, str]],
    samples: list[dict[str, Any]],
    latencies: list[dict[str, Any]],
    learning: str = "",
) -> str:
    counts = [(k, v) for k, v in sorted(summary.items()) if not isinstance(v, dict)]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>personalize run report</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:1000px}table{border-collapse:collapse;"
        "margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "iframe{width:100%;height:420px;border:1px solid #ccc}</style></head><body>",
        "<h1>Run report</h1>",
        "<h2>Counts</h2>",
        _table([(k, str(v)) for k, v in counts], ("what", "count")),
        "<h2>Decisions per trigger</h2>",
        _table(
            [(t, d, str(n)) for (t, d), n in sorted(decisions.items())],
            ("trigger", "decision", "count"),
        ),
        "<h2>Consent changes</h2>",
        _table([(d, str(n)) for d, n in sorted(consents.items())], ("decision", "count")),
        "<h2>Suppression reasons</h2>",
        _table([(r, str(n)) for r, n in reasons.most_common()], ("reason", "count")),
        "<h2>Dead-letter reasons</h2>",
        _table([(r, str(n)) for r, n in dead_reasons.most_common()], ("reason", "count")),
    ]
    if latencies:
        by_type: dict[str, list[float]] = {}
        for row in latencies:
            by_type.setdefault(row["type"], []).append(row["ms"])
        rows = [
            (k, str(len(v)), f"{_percentile(v, 0.5):.0f}", f"{_percentile(v, 0.99):.0f}")
            for k, v in sorted(by_type.items())
        ]
        parts += ["<h2>Latency (ms)</h2>", _table(rows, ("trigger", "payloads", "p50", "p99"))]
    for title, png in figures:
        t = html.escape(title)
        parts.append(f"<h2>{t}</h2><img src='{html.escape(png)}' alt='{t}'>")
    parts.append(learning)
    parts.append("<h2>Sample emails</h2>")
    for p in samples:
        meta = f"{p['trigger']['type']} / variant {p.get('variant')} / {p['message_id']}"
        parts.append(f"<h3>{html.escape(p.get('subject', ''))}</h3><p>{html.escape(meta)}</p>")
        parts.append(
            f"<iframe sandbox='' srcdoc='{html.escape(p.get('html', ''), quote=True)}'></iframe>"
        )
    if not samples:
        parts.append("<p><em>no payloads</em></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
