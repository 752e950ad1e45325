"""`personalize bench`: every benchmark scenario next to its baseline, measured in the same run.

    personalize bench [--quick] [--only core,decode,state,bandit,beam,flink[,flink_scale]]
                      [--out DIR] [--profile]
        -> DIR/bench.json (every row, per-scenario details, host and load), DIR/bench.md (table)

Scenarios, in the order they run (the cheap, in-process ones first, the engines last):

    core    the core through the ReferenceRunner (shipped rees46 data, generated traffic)
            beside a loop that only decodes the same records' Avro bytes; where the time goes
            (payload building and rendering, feature snapshots); the bound: the same rules
            inlined in one loop (core_bound.py)                              runners/bench/core.py
    decode  codec.decode_event beside a bare fastavro loop              runners/bench/decode.py
    state   pickled CustomerState bytes per active customer at 10k / 100k (/ 1M) customers
            beside the bytes of their raw input records; process RSS      runners/bench/state.py
    bandit  the variant policies (thompson, uniform split, best fixed variant) with the loop
            closed over a ground truth, same traffic: expected regret and clicks
                                                                        runners/bench/bandit.py
    beam    the Beam topology beside an empty Beam pass-through over Kafka runners/bench/beam.py
    flink   the PyFlink topology beside an empty pass-through (local mini-cluster), then
            latency p50 / p99 at half its throughput; RSS of the JVM running the Python
            functions                                                   runners/bench/flink.py
    flink_scale  (only when named in --only) the topology and the keyed floor at parallelism
            1 and 2 on the standalone cluster of `personalize services`: rate and CPU per
            record, p2 / p1                                       runners/bench/flink_scale.py

Each scenario runs in its own Python process (`python -m runners.bench --child ...`), so that
its peak RSS (getrusage) is its own, a crash or hang cannot take the harness down, and one
scenario's garbage does not slow the next. A scenario that fails or times out is reported as
an error with its message; the others still run, and the command exits 1 at the end. A missed
performance target is a FAIL in the table but not an error (exit 0) unless `--strict`.

The machine may be shared: absolute rates are noisy, so every rate is measured next to its
baseline in the same process and the ratio is reported too; the load average is recorded at
the start and end of every scenario.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transforms.settings import Settings, load_settings

# name -> (module, function); a function takes (settings, Sizes, Context) and returns Outcome.
SCENARIOS: dict[str, tuple[str, str]] = {
    "core": ("runners.bench.core", "core_scenario"),
    "decode": ("runners.bench", "decode_scenario"),
    "state": ("runners.bench.state", "state_scenario"),
    "bandit": ("runners.bench.bandit", "bandit_scenario"),
    "beam": ("runners.bench", "beam_scenario"),
    "flink": ("runners.bench", "flink_scenario"),
    "flink_scale": ("runners.bench.flink_scale", "scale_scenario"),
}
# Run only when named in --only: it needs the standalone cluster laid out for it
# (runners/bench/flink_scale.py).
OPT_IN = frozenset({"flink_scale"})
DEFAULT_SCENARIOS = tuple(n for n in SCENARIOS if n not in OPT_IN)
DEFAULT_OUT = Path("out/bench")
ENGINE_TARGET_RATIO = 0.5  # DESIGN.md section 7: topology >= half the empty pass-through
LATENCY_TARGET_MS = 1000.0  # DESIGN.md section 7: p99 within 1 s
FLINK_FALLBACK_RATE = 200.0  # latency run rate when the throughput run failed


# ------------------------------------------------------------------ what scenarios report


@dataclass(frozen=True)
class Target:
    """A DESIGN.md target on a row's value or ratio: `value >= 100000`, `ratio >= 0.5`, ..."""

    on: str  # "value" | "ratio"
    op: str  # ">=" | "<=" | "<" | "=="
    threshold: float
    text: str

    def check(self, row: Row) -> bool | None:
        """Whether the row meets it (None when the row has no number to check)."""
        x = row.value if self.on == "value" else row.ratio
        if x is None:
            return None
        if self.op == ">=":
            return x >= self.threshold
        if self.op == "<=":
            return x <= self.threshold
        if self.op == "<":
            return x < self.threshold
        return x == self.threshold


@dataclass
class Row:
    """One line of the summary table. `ratio` is value / baseline unless the scenario says."""

    scenario: str
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: Target | None = None
    passed: bool | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = round(self.value / self.baseline, 4)
        if self.target is not None and self.passed is None:
            self.passed = self.target.check(self)


@dataclass
class Outcome:
    """What a scenario returns: table rows, and details for the JSON (any JSON-able values)."""

    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # parts that failed; the rest still counts


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; `--quick` and `--scale` pick them (see `Sizes.pick`).

    Quick runs drop the 1M-customer clone and give each state population 2 events per
    customer instead of 4, so their bytes per customer compare with quick runs only.
    """

    core_rounds: int = 5
    core_real_items: int | None = None  # a prefix of the shipped data; None = all of it
    core_traffic_events: int = 200_000
    decode_records: int = 200_000
    decode_rounds: int = 3
    state_customers: tuple[int, ...] = (10_000, 100_000)
    state_events_per_customer: float = 4.0
    state_replicate_to: int | None = 1_000_000  # 1M: the largest population's states, cloned
    engine_events: int = 20_000
    flink_passthrough: int = 200_000  # the pass-through is fast: more records, less noise
    latency_seconds: float = 60.0
    bandit_events: int = 30_000  # base traffic of the closed loops (runners/bench/bandit.py)
    timeout_s: float = 1800.0  # per scenario

    @classmethod
    def pick(cls, quick: bool, scale: float = 1.0) -> Sizes:
        """Full or quick sizes, every count times `scale` (tests run a tiny fraction)."""
        base = (
            cls()
            if not quick
            else cls(
                core_rounds=3,
                core_traffic_events=20_000,
                decode_records=20_000,
                state_events_per_customer=2.0,
                state_replicate_to=None,
                engine_events=5_000,
                flink_passthrough=20_000,
                latency_seconds=30.0,
                bandit_events=10_000,
                timeout_s=600.0,
            )
        )
        if scale == 1.0:
            return base

        def n(x: int, least: int = 10) -> int:
            return max(least, int(x * scale))

        return dataclasses.replace(
            base,
            core_rounds=max(1, min(base.core_rounds, int(base.core_rounds * scale) or 1)),
            core_real_items=n(22_000),
            core_traffic_events=n(base.core_traffic_events),
            decode_records=n(base.decode_records),
            decode_rounds=max(1, min(base.decode_rounds, int(base.decode_rounds * scale) or 1)),
            state_customers=tuple(n(c) for c in base.state_customers),
            state_replicate_to=(
                None if base.state_replicate_to is None else n(base.state_replicate_to)
            ),
            engine_events=n(base.engine_events),
            flink_passthrough=n(base.flink_passthrough),
            bandit_events=n(base.bandit_events),
        )


@dataclass
class Context:
    """What a scenario can use besides settings and sizes: where to write, how to say progress."""

    name: str
    out_dir: Path
    profile: bool = False

    def say(self, message: str) -> None:
        """One progress line, prefixed with the scenario's name."""
        print(f"  [{self.name}] {message}", flush=True)


# ------------------------------------------------------------------ CLI


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `bench` to the CLI."""
    p = sub.add_parser(
        "bench",
        parents=parents,
        help="benchmarks, each next to its baseline in the same run (JSON + Markdown)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes (CI)")
    p.add_argument(
        "--only",
        default=",".join(DEFAULT_SCENARIOS),
        metavar="LIST",
        help=f"comma-separated scenarios (default: {','.join(DEFAULT_SCENARIOS)}; also "
        f"{','.join(sorted(OPT_IN))}: parallelism 1 against 2 on the standalone cluster)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where bench.json and bench.md go (default: {DEFAULT_OUT})",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile the core on the shipped data (DIR/core_profile.txt)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply every size by F (the tests use a tiny one)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds before a scenario is stopped (default: 600 quick, 1800 full)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 when a target is missed (errors always exit 1)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the selected scenarios one by one, each in its own process; write and print."""
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown or not names:
        print(
            f"bench: unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}", file=sys.stderr
        )
        return 2
    names = [n for n in SCENARIOS if n in names]  # always in the canonical order
    sizes = Sizes.pick(args.quick, args.scale)
    if args.timeout is not None:
        sizes = dataclasses.replace(sizes, timeout_s=args.timeout)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_args = _settings_args(args)
    command = _command(args)

    report: dict[str, Any] = {
        "command": command,
        "started_at": _now(),
        "quick": args.quick,
        "scale": args.scale,
        "sizes": dataclasses.asdict(sizes),
        "host": _host(),
        "scenarios": {},
        "rows": [],
    }
    print(
        f"bench: {command}\nbench: {', '.join(names)} -> {out_dir}; load average {_load()}",
        flush=True,
    )
    for name in names:
        print(f"bench: {name} ...", flush=True)
        result = _run_child(name, sizes, out_dir, args.profile, settings_args)
        report["scenarios"][name] = result
        report["rows"].extend(result.pop("rows", []))
        status = "ok" if result["status"] == "ok" else f"ERROR: {result['error']}"
        print(
            f"bench: {name} {status} in {result['seconds']:.1f} s "
            f"(peak RSS {_mb(result.get('peak_rss_kb'))} MB)",
            flush=True,
        )
        _write(report, out_dir)  # after each scenario: a later crash keeps what was measured
    report["finished_at"] = _now()
    report["host"]["load_average_end"] = _load()
    json_path, md_path = _write(report, out_dir)
    print()
    print(_table(report["rows"]))
    errors = [n for n, r in report["scenarios"].items() if r["status"] != "ok"]
    missed = [f"{r['scenario']}: {r['metric']}" for r in report["rows"] if r["passed"] is False]
    print(f"\nbench: wrote {json_path} and {md_path}")
    if missed:
        print(f"bench: {len(missed)} target(s) missed: " + "; ".join(missed))
    if errors:
        print(f"bench: {len(errors)} scenario(s) failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 3 if args.strict and missed else 0


def _settings_args(args: argparse.Namespace) -> list[str]:
    """The settings options of this command, to hand on to the scenario processes."""
    out = ["--config", args.config] if args.config else []
    for pair in args.overrides:
        out += ["--set", pair]
    return out


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (for the report)."""
    words = ["personalize", "bench"]
    if args.quick:
        words.append("--quick")
    if args.only != ",".join(DEFAULT_SCENARIOS):
        words += ["--only", args.only]
    words += ["--out", str(args.out)]
    if args.profile:
        words.append("--profile")
    if args.scale != 1.0:
        words += ["--scale", f"{args.scale:g}"]
    if args.timeout is not None:
        words += ["--timeout", f"{args.timeout:g}"]
    return " ".join(_quote(w) for w in [*words, *_settings_args(args)])


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_.,/=:" for c in arg) else repr(arg)


# ------------------------------------------------------------------ scenario processes


def _run_child(
    name: str, sizes: Sizes, out_dir: Path, profile: bool, settings_args: list[str]
) -> dict[str, Any]:
    """Run one scenario in its own process; its result, or an error with what went wrong."""
    started = time.monotonic()
    load_start = _load()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "runners.bench",
            "--child",
            name,
            "--result",
            str(result_file),
            "--out",
            str(out_dir),
            "--sizes",
            json.dumps(dataclasses.asdict(sizes)),
            *settings_args,
        ]
        if profile:
            cmd.append("--profile")
        # Its own session: on a timeout the whole group goes (engines start processes).
        proc = subprocess.Popen(cmd, start_new_session=True)
        error = None
        try:
            code = proc.wait(timeout=sizes.timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            code = None
            error = f"timed out after {sizes.timeout_s:.0f} s (stopped)"
        result: dict[str, Any] = {}
        if result_file.is_file():
            result = json.loads(result_file.read_text())
    if error is None and code != 0 and "error" not in result:
        error = f"scenario process exited with code {code} without a result"
    error = error or result.get("error")
    return {
        "status": "ok" if error is None else "error",
        "error": error,
        "traceback": result.get("traceback"),
        "seconds": round(time.monotonic() - started, 2),
        "load_average_start": load_start,
        "load_average_end": _load(),
        "peak_rss_kb": result.get("peak_rss_kb"),
        "rss_after_imports_kb": result.get("rss_after_imports_kb"),
        "children_peak_rss_kb": result.get("children_peak_rss_kb"),
        "details": result.get("details", {}),
        "notes": result.get("notes", []),
        "rows": result.get("rows", []),
    }


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the scenario's process group (it is the group leader), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def child_main(argv: list[str]) -> int:
    """`python -m runners.bench --child NAME ...`: run one scenario, write its result JSON."""
    p = argparse.ArgumentParser(prog="runners.bench --child")
    p.add_argument("--child", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sizes", required=True)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    fields = json.loads(args.sizes)
    fields["state_customers"] = tuple(fields["state_customers"])
    sizes = Sizes(**fields)
    settings = load_settings(args.config, os.environ, args.overrides)
    module, function = SCENARIOS[args.child]
    ctx = Context(args.child, args.out, args.profile)
    result: dict[str, Any] = {}
    code = 0
    try:
        scenario: Callable[[Settings, Sizes, Context], Outcome] = getattr(
            importlib.import_module(module), function
        )
        result["rss_after_imports_kb"] = _peak_rss_kb()
        outcome = scenario(settings, sizes, ctx)
        result["rows"] = [_row_json(r) for r in outcome.rows]
        result["details"] = outcome.details
        result["notes"] = outcome.notes
        if outcome.errors:
            result["error"] = "; ".join(outcome.errors)[:2000]
            code = 1
    except Exception as exc:  # noqa: BLE001 - the harness reports any failure and goes on
        result["error"] = describe(exc)
        result["traceback"] = traceback.format_exc()[-8000:]
        print(result["traceback"], file=sys.stderr, flush=True)
        code = 1
    result["peak_rss_kb"] = _peak_rss_kb()
    result["children_peak_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = result.setdefault("rows", [])
    if "traceback" not in result:  # the scenario returned (maybe with errors of its parts)
        rows.append(
            _row_json(
                Row(
                    args.child,
                    "peak RSS of the benchmark process",
                    round(result["peak_rss_kb"] / 1024),
                    "MB",
                    baseline=round((result.get("rss_after_imports_kb") or 0) / 1024) or None,
                    baseline_label="after imports",
                )
            )
        )
    args.result.write_text(json.dumps(result, default=str))
    return code


def describe(exc: BaseException, limit: int = 1200) -> str:
    """An exception in a few lines: its first line and every `Caused by:` of a Java stack
    (a Py4JJavaError's message is the whole JVM trace, the root cause at its end)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    head = lines[:2] if lines else [""]
    causes = [line for line in lines[2:] if line.startswith("Caused by:")]
    text = " | ".join([f"{type(exc).__name__}: {head[0]}", *head[1:], *causes[-4:]])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _peak_rss_kb() -> int:
    """This process's peak resident set so far (Linux: kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _row_json(row: Row) -> dict[str, Any]:
    d = dataclasses.asdict(row)
    d["target"] = row.target.text if row.target else ""
    return d


# ------------------------------------------------------------------ decode, beam, flink


def decode_scenario(settings: Settings, sizes: Sizes, ctx: Context) -> Outcome:
    """codec.decode_event beside bare fastavro loops over the same records (bench_decode)."""
    from runners.bench.decode import bench_decode

    ctx.say(f"{sizes.decode_records} generated events, best of {sizes.decode_rounds} rounds")
    r = bench_decode(sizes.decode_records, sizes.decode_rounds)
    bare = max(r["fastavro_per_s"], r["fastavro_plain_longs_per_s"])
    return Outcome(
        rows=[
            Row(
                "decode",
                "decode_event records/s (best round)",
                r["decode_event_per_s"],
                "records/s",
                bare,
                "bare fastavro schemaless_reader loop",
            )
        ],
        details=r,
    )


def beam_scenario(settings: Settings, sizes: Sizes, ctx: Context) -> Outcome:
    """The Beam topology beside an empty Beam pass-through over the same Kafka topics."""
    from runners.bench.beam import bench_beam

    lease = _need_services(settings, ["kafka"], ctx)
    try:
        ctx.say(f"{sizes.engine_events} records of the shipped data through Kafka")
        r = bench_beam(settings, sizes.engine_events)
    finally:
        lease.release()
    if (r.get("topology") or {}).get("per_s") is None:
        raise ValueError(f"bench_beam returned no topology rate: {sorted(r)}")
    return Outcome(rows=_engine_rows("beam", r), details=r)


def flink_scenario(settings: Settings, sizes: Sizes, ctx: Context) -> Outcome:
    """The PyFlink topology beside an empty pass-through (local mini-cluster), then latency
    percentiles at half the topology's throughput; peak RSS of the JVM that runs the Python
    functions (thread mode) or of the Python workers (process mode), sampled from /proc."""
    from runners.bench import flink as bench_flink

    outcome = Outcome()
    lease = _need_services(settings, ["kafka"], ctx)
    sampler = _ProcessSampler([os.getpid()])
    rate = products_rate = None
    try:
        with sampler:
            ctx.say(f"throughput: {sizes.engine_events} records of the shipped data via Kafka")
            try:
                tp = _call(
                    bench_flink.throughput,
                    settings,
                    sizes.engine_events,
                    passthrough_events=max(sizes.engine_events, sizes.flink_passthrough),
                )
            except Exception as exc:  # noqa: BLE001 - reported; the latency run still goes
                traceback.print_exc()
                outcome.errors.append(f"throughput: {describe(exc)}")
            else:
                outcome.details["throughput"] = tp
                outcome.errors += _implausible(tp)
                records = tp.get("topology_records", tp.get("records"))
                base_records = tp.get("passthrough_records", records)
                outcome.rows += _engine_rows(
                    "flink",
                    {
                        "records": f"{records}; pass-through {base_records}",
                        "topology": {"per_s": tp.get("topology_eps")},
                        "passthrough": {"per_s": tp.get("passthrough_eps")},
                    },
                )
                outcome.rows.append(
                    Row(
                        "flink",
                        "keyed floor records/s: Kafka keyed by customer -> one Python keyed "
                        "function that only reads/writes its ValueState and sets/fires a timer "
                        f"per record -> Kafka ({base_records} records; no decoding, no rules)",
                        tp.get("floor_eps"),
                        "records/s",
                        tp.get("passthrough_eps"),
                        "empty pass-through, same topics",
                    )
                )
                outcome.rows.append(
                    Row(
                        "flink",
                        f"topology records/s against the keyed floor ({records} records; floor "
                        f"{base_records})",
                        tp.get("topology_eps"),
                        "records/s",
                        tp.get("floor_eps"),
                        "keyed floor, same run",
                        note="issue 19's acceptance: the keyed contract's own cost is the floor",
                        target=Target("ratio", ">=", 0.5, ">= 0.5 x keyed floor"),
                    )
                )
                if tp.get("topology_cpu_us") and tp.get("floor_cpu_us"):
                    outcome.rows.append(
                        Row(
                            "flink",
                            "topology CPU per record (mini-cluster JVM) against the keyed floor's "
                            "(ratio: floor / topology, steadier than wall time on a shared host)",
                            tp["topology_cpu_us"],
                            "us",
                            tp["floor_cpu_us"],
                            "keyed floor, same run",
                            ratio=round(tp["floor_cpu_us"] / tp["topology_cpu_us"], 3),
                        )
                    )
                if tp.get("products_eps"):
                    outcome.rows.append(
                        Row(
                            "flink",
                            "topology with the product stage records/s (a catalog-changes topic "
                            f"to read, empty: interest kept for every product event; {records} "
                            "records)",
                            tp.get("products_eps"),
                            "records/s",
                            tp.get("floor_eps"),
                            "keyed floor, same run",
                            note=f"CPU per record {tp.get('products_cpu_us')} us",
                        )
                    )
                if tp.get("core_eps") and tp.get("floor_eps"):
                    # Any topology does at least the floor's engine work and the core's rules per
                    # record, one after the other on one interpreter (GIL): its rate is at most
                    # 1 / (1/floor + 1/core), whatever its operators look like.
                    ceiling = 1 / (1 / tp["floor_eps"] + 1 / tp["core_eps"])
                    outcome.rows.append(
                        Row(
                            "flink",
                            "ceiling records/s of any topology: the keyed floor's engine work and "
                            f"the core's rules alone ({tp['core_eps']} records/s, no engine) in "
                            "series per record",
                            round(ceiling, 1),
                            "records/s",
                            tp.get("floor_eps"),
                            "keyed floor, same run",
                            note="what the 0.5 x floor target asks of the engine adapters: "
                            "reachable only if this ratio is well above 0.5",
                        )
                    )
                outcome.rows.append(
                    Row(
                        "flink",
                        "fused bound records/s: keyed and timed in Java as the floor, one Python "
                        "keyed operator that decodes and runs the core, Compose chained "
                        f"({records} records; no lateness, audit and dead letters discarded)",
                        tp.get("fused_eps"),
                        "records/s",
                        tp.get("passthrough_eps"),
                        "empty pass-through, same topics",
                        note="bench_flink._fused_job: an upper bound for a topology that "
                        "decodes and runs the rules in Python",
                        target=Target("ratio", ">=", 0.5, ">= 0.5 x pass-through"),
                    )
                )
                outcome.notes.append(
                    f"throughput ({tp.get('execution_mode')} mode, local mini-cluster): rate = "
                    "records over the difference in wall time of a full and a 5% run, so job "
                    f"start-up cancels out; 5% runs took {tp.get('passthrough_startup_s')} s "
                    f"(pass-through) and {tp.get('topology_startup_s')} s (topology); the core "
                    f"alone on the topology's input: {tp.get('core_eps')} records/s"
                )
                rate = (tp.get("topology_eps") or 0) / 2 or None
                products_rate = (tp.get("products_eps") or 0) / 2 or None
            rate = rate or FLINK_FALLBACK_RATE
            # Each deployment at half of its own maximum (DESIGN.md section 7).
            products_rate = products_rate or rate
            ctx.say(f"latency: {sizes.latency_seconds:g} s at {rate:.0f} events/s")
            try:
                lat = bench_flink.latency(settings, rate, sizes.latency_seconds)
            except Exception as exc:  # noqa: BLE001 - reported with what was measured
                traceback.print_exc()
                outcome.errors.append(f"latency: {describe(exc)}")
            else:
                outcome.details["latency"] = lat
                outcome.rows += _latency_rows("flink", lat, rate)
                counts = {k: v for k, v in lat.items() if k.endswith("_payloads")}
                outcome.notes.append(
                    f"latency at {rate:.0f} events/s for {sizes.latency_seconds:g} s after "
                    f"{lat.get('warmup_s')} s of the background traffic alone, payloads "
                    f"measured: {counts}; run settings: {', '.join(bench_flink.LATENCY_SETTINGS)}"
                )
                if not lat.get("browse_payloads") or not lat.get("cart_payloads"):
                    outcome.errors.append(
                        f"latency: a trigger's payloads never reached the output topic in "
                        f"{sizes.latency_seconds:g} s ({counts})"
                    )
            # The same with a catalog stream to read: the product stage runs, and PerCustomer's
            # watermark waits for it (docs/flink-topology.md).
            ctx.say(f"latency with the product stage: {sizes.latency_seconds:g} s at "
                    f"{products_rate:.0f} events/s")
            try:
                lat = bench_flink.latency(settings, products_rate, sizes.latency_seconds,
                                          catalog=True)
            except Exception as exc:  # noqa: BLE001 - reported with what was measured
                traceback.print_exc()
                outcome.errors.append(f"latency with the product stage: {describe(exc)}")
            else:
                outcome.details["latency_products"] = lat
                outcome.rows += [
                    dataclasses.replace(row, metric=row.metric + " (with the product stage)")
                    for row in _latency_rows("flink", lat, products_rate)
                    if "uncommitted" not in row.metric
                ]
    finally:
        lease.release()
    peak = sampler.peaks()
    outcome.details["worker_peak_rss_kb"] = peak
    if peak:
        label, kb = max(peak.items(), key=lambda kv: kv[1])
        outcome.rows.append(
            Row(
                "flink",
                f"peak RSS of the Flink/Python worker process ({label})",
                round(kb / 1024),
                "MB",
                note="sampled every 0.5 s",
            )
        )
    return outcome


def _need_services(settings: Settings, names: list[str], ctx: Context) -> Any:
    """Hold a lease on the services (started if down; stopped afterwards only if we did).

    The lease is the test sessions' (runners/services/__init__.py): services someone started by hand
    are never stopped, and concurrent holders never lose theirs.
    """
    from runners import services

    for noisy in ("apache_beam", "kafka", "py4j", "pyflink"):  # keep the progress readable
        logging.getLogger(noisy).setLevel(logging.ERROR)

    ctx.say(f"making sure {', '.join(names)} {'is' if len(names) == 1 else 'are'} up")
    lease = services.Lease(settings)
    try:
        for name in names:
            lease.need(name, also=names)
    except services.ServiceError:
        lease.release()
        raise
    return lease


def _engine_rows(engine: str, r: dict[str, Any]) -> list[Row]:
    """Rows of an engine bench result: {"topology": {"per_s"}, "passthrough": {"per_s"}, ...}."""
    topo = (r.get("topology") or {}).get("per_s")
    base = (r.get("passthrough") or {}).get("per_s")
    return [
        Row(
            engine,
            f"topology records/s, Kafka to Kafka ({r.get('records', '?')} records)",
            topo,
            "records/s",
            base,
            "empty pass-through, same topics",
            target=Target(
                "ratio", ">=", ENGINE_TARGET_RATIO, f">= {ENGINE_TARGET_RATIO} x pass-through"
            ),
        )
    ]


def _implausible(tp: dict[str, Any]) -> list[str]:
    """Rates bench_flink.throughput derived from a non-positive time difference, voided.

    Its rate is (n - n/20) / (t_full - t_5%); when the 5% run took longer (the JVM's cold
    start landed in it), the difference says nothing and the rate must not be reported.
    """
    problems = []
    for job in ("passthrough", "floor", "fused", "topology"):
        small, full = tp.get(f"{job}_startup_s"), tp.get(f"{job}_full_s")
        if small is not None and full is not None and full <= small:
            tp[f"{job}_eps"] = None
            problems.append(
                f"throughput: {job} rate not measurable: the full run ({full} s) was not longer "
                f"than the 5% run ({small} s), start-up noise is larger than the work"
            )
    return problems


def _latency_rows(engine: str, r: dict[str, Any], rate: float) -> list[Row]:
    """p50 / p99 rows per trigger from a latency result ({"browse_p99_ms": ...}); payloads read
    committed (what the ESP connector sees) carry the target, read-uncommitted ones are shown
    beside them when measured (the cost of exactly-once: waiting for the checkpoint)."""
    rows = []
    for short, what in (
        ("browse", "browse intensity: event in Kafka"),
        ("cart", "cart abandonment: deadline"),
    ):
        for level in ("", "_uncommitted"):
            if level and f"{short}{level}_p99_ms" not in r:
                continue
            for pct in ("p50", "p99"):
                committed = not level
                target = (
                    Target("value", "<=", LATENCY_TARGET_MS, "<= 1000 ms")
                    if pct == "p99" and committed
                    else None
                )
                rows.append(
                    Row(
                        engine,
                        f"latency {pct}, {what} -> payload "
                        f"{'committed' if committed else 'uncommitted'} on the output topic",
                        r.get(f"{short}{level}_{pct}_ms"),
                        "ms",
                        note=f"at {rate:.0f} events/s, {r.get(short + level + '_payloads')} "
                        "payloads"
                        + (f", max {r.get(short + level + '_max_ms')} ms" if pct == "p99" else ""),
                        target=target,
                    )
                )
    return rows


def _call(fn: Callable[..., Any], *args: Any, **optional: Any) -> Any:
    """fn(*args, **the optional keywords it accepts): engine benches are still evolving."""
    import inspect

    accepted = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in optional.items() if k in accepted})


class _ProcessSampler:
    """Peak RSS of some processes and their descendants, sampled in a thread (/proc)."""

    def __init__(self, roots: list[int], every_s: float = 0.5) -> None:
        self.roots = [*roots, os.getpid()]
        self.every_s = every_s
        self._peaks: dict[str, int] = {}
        self._stop = False
        self._thread: Any = None

    def __enter__(self) -> _ProcessSampler:
        import threading

        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def peaks(self) -> dict[str, int]:
        """{"pid name": peak kB} of the processes other than this one."""
        return dict(self._peaks)

    def _loop(self) -> None:
        while not self._stop:
            for pid in _descendants(self.roots):
                if pid == os.getpid():
                    continue
                kb, label = _rss_kb(pid)
                if kb:
                    self._peaks[label] = max(self._peaks.get(label, 0), kb)
            time.sleep(self.every_s)


def _descendants(roots: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _rss_kb(pid: int) -> tuple[int, str]:
    """(VmRSS in kB, "pid what") of a process, (0, "") if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            status = fh.read()
    except OSError:
        return 0, ""
    kb = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    return kb, f"{pid} {_what(argv)}"


def _what(argv: list[str]) -> str:
    """A short name for a command line: a JVM's main class, else the program and its script."""
    if not argv:
        return "?"
    program = Path(argv[0]).name
    if program == "java":
        main = next((a for a in argv[1:] if a.startswith("org.apache.")), "java")
        return f"java {main.rsplit('.', 1)[-1]}"
    script = next((a for a in argv[1:] if a.endswith(".py") or "." in a and a[0] != "-"), "")
    return f"{program} {Path(script).name}".strip()[:60]


# ------------------------------------------------------------------ output


def _write(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    json_path = out_dir / "bench.json"
    md_path = out_dir / "bench.md"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md_path.write_text(_markdown(report))
    return json_path, md_path


def _markdown(report: dict[str, Any]) -> str:
    host = report["host"]
    lines = [
        "# Benchmark results",
        "",
        f"- command: `{report['command']}`",
        f"- started {report['started_at']}, finished {report.get('finished_at', '(running)')}",
        f"- host: {host['cpus']} CPUs, {host['memory_gb']} GB, {host['platform']}, "
        f"Python {host['python']}",
        f"- source: {host.get('source', '-')}",
        f"- load average (1, 5, 15 min) at start: {host['load_average_start']}, "
        f"at end: {host.get('load_average_end', '-')}",
        "- ratio = value / baseline, both measured in the same process, same run",
        "",
        _table(report["rows"]),
        "",
        "## Scenarios",
        "",
    ]
    for name, r in report["scenarios"].items():
        status = "ok" if r["status"] == "ok" else f"**ERROR**: `{r['error']}`"
        lines.append(
            f"- **{name}**: {status}; {r['seconds']} s; load average {r['load_average_start']} "
            f"-> {r['load_average_end']}; peak RSS {_mb(r.get('peak_rss_kb'))} MB "
            f"(largest child process {_mb(r.get('children_peak_rss_kb'))} MB)"
        )
        lines.extend(f"  - {note}" for note in r.get("notes", []))
    lines.append("")
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]]) -> str:
    head = ["scenario", "metric", "value", "baseline", "ratio", "target", "result"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        verdict = {True: "pass", False: "**FAIL**", None: "-"}[r["passed"]]
        baseline = "-"
        if r["baseline"] is not None:
            baseline = _num(r["baseline"]) + (
                f" ({r['baseline_label']})" if r["baseline_label"] else ""
            )
        metric = r["metric"] + (f" ({r['note']})" if r["note"] else "")
        out.append(
            "| "
            + " | ".join(
                [
                    r["scenario"],
                    metric,
                    f"{_num(r['value'])} {r['unit']}",
                    baseline,
                    "-" if r["ratio"] is None else f"{r['ratio']:.3g}",
                    r["target"] or "-",
                    verdict,
                ]
            )
            + " |"
        )
    return "\n".join(out)


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not x.is_integer() and abs(x) < 1000:
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    return f"{round(x):,}".replace(",", " ")


def _mb(kb: int | None) -> str:
    return "-" if not kb else str(round(kb / 1024))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _host() -> dict[str, Any]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(pages / 2**30, 1),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "load_average_start": _load(),
        "source": _source_version(),
    }


def _source_version() -> str:
    """The commit measured, and whether the code under measure had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "transforms",
                "pipelines",
                "runners",
                "templates",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head} + uncommitted changes" if dirty else head

