"""Core throughput: the rules through the ReferenceRunner beside a decode-only loop, same run.

    core_scenario(settings, Sizes, Context) -> Outcome   (runners/bench/__init__.py runs it)
    profile_core(core, items, out_dir) -> top functions  (`personalize bench --profile`)

Inputs: the shipped rees46 data (real traffic, a profile synthesized before each customer's
first event: about 22k records) and a larger generated traffic (runners/traffic.py, about an hour
of event time, so cart deadlines fire). Records are decoded before the clock starts. A rate
counts input records: behaviour events and profile updates.

The core is two stages (transforms/compose.py), measured apart and together:
  keyed    the reference runner over Core.step / wake: watermark, timers, dedup, buffering,
           windows, triggers, policy, payload requests, feature snapshots, end-of-input flush.
           This is the per-customer operator of every engine. Target: >= 100 000 records/s.
           Timers fire in the runner's rounds (pipelines/reference.py FIRE_EVERY, like an
           engine's periodic watermark); on the shipped data the keyed stage is measured with
           timers fired after every record too (one wake per record: the streaming worst case).
  compose  Composer.compose over the payload requests that pass emitted: recommendations,
           catalog lookups, rendering (Jinja, CSS inlining). Stateless: an engine runs it as
           its own stage and can scale it out apart from the keyed one.
  whole    records / (keyed + compose seconds): both stages in one process, one core.

Baseline: a bare loop over the same records' Avro bytes through codec.decode_event and
decode_profile, nothing else: the least any deployment does per record before the core sees it.
Each round runs the baseline, then the keyed stage, then the compose stage, so all see the same
load on a shared machine; the best and the median round are reported. An untimed warm-up
compiles the templates first. Each pass also counts the process's CPU time
(time.process_time): records per CPU second is what the same code would do on an unshared
core, the number to compare across loaded runs. `Core._snapshot` (feature snapshots for Redis)
is wrapped on the instance by a timer (two perf_counter calls per call) to show its share.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.common import build_core
from pipelines.reference import FIRE_EVERY, ReferenceRunner
from runners import SHIPPED_DATA as SHIPPED
from runners.bench import Context, Outcome, Row, Sizes, Target, core_bound
from runners.traffic import Traffic, TrafficConfig
from transforms.codec import decode_event, decode_profile, encode_event, encode_profile
from transforms.core import Core
from transforms.model import (
    AUDIT,
    FEATURES,
    PAYLOAD,
    BehaviourEvent,
    CustomerProfile,
    Origin,
    Output,
    PayloadRequest,
    event_time,
)
from transforms.readers import read_rees46
from transforms.settings import HOUR, CoreSettings, Settings

_ROOT = f"{Path(__file__).resolve().parents[2]}/"
CORE_TARGET = 100_000  # records/s, DESIGN.md section 7
WARMUP_ITEMS = 3000
Record = BehaviourEvent | CustomerProfile


def core_scenario(settings: Settings, sizes: Sizes, ctx: Context) -> Outcome:
    """Both inputs, each next to its decode-only baseline; where the time goes; a profile."""
    outcome = Outcome()
    core = build_core(settings)
    timers = _Timers(core)
    real = shipped_records(settings.core, sizes.core_real_items)
    traffic = traffic_records(sizes.core_traffic_events)
    # The inputs (about a million objects) are the harness's, not the core's: out of the cyclic
    # collector's sight, or every full collection in a round walks them (alternate rounds ran
    # 25-30 % slower for it). The core's own objects are collected as usual.
    gc.collect()
    gc.freeze()
    for label, records in (("shipped rees46 data", real), ("generated traffic", traffic)):
        ctx.say(f"{label}: {len(records)} records, {sizes.core_rounds} rounds")
        m = measure(core, timers, records, settings.core, sizes.core_rounds, ctx.say)
        outcome.details[label] = m
        outcome.rows += _rows(label, m, sizes.core_rounds)
        outcome.notes.append(_note(label, m))
    label = "shipped rees46 data, timers after every record"
    ctx.say(f"{label}: {len(real)} records, {sizes.core_rounds} rounds")
    m = measure(core, timers, real, settings.core, sizes.core_rounds, ctx.say, fire_every=1)
    outcome.details[label] = m
    outcome.rows += _rows(label, m, sizes.core_rounds)[:1]
    ctx.say(f"the bound (bench/core_bound.py): {len(real)} records, {sizes.core_rounds} rounds")
    modelled = core_bound.modelled(settings)   # the same triggers as the bound, same work
    bound = measure_bound(build_core(modelled), real, modelled.core, sizes.core_rounds, ctx.say)
    outcome.details["bound"] = bound
    outcome.rows.append(_bound_row(bound))
    outcome.notes.append(_bound_note(bound))
    if ctx.profile:
        ctx.say("profiling one pass over the shipped data (cProfile)")
        top = profile_core(build_core(settings), real, ctx.out_dir)
        outcome.details["profile_top_own_time"] = top
        outcome.notes.append(
            f"profile (cProfile, shipped data, {ctx.out_dir / 'core_profile.txt'}): top own "
            "time: " + "; ".join(f"{t['function']} {t['own_pct']}%" for t in top[:8])
        )
    return outcome


# ------------------------------------------------------------------ inputs


def shipped_records(core: CoreSettings, limit: int | None = None) -> list[Record]:
    """The shipped rees46 sample as pre-decoded records (its dead letters left out)."""
    if not SHIPPED.is_file():
        raise FileNotFoundError(f"shipped data missing: {SHIPPED} (see shared/data/README.md)")
    items = read_rees46(SHIPPED, core=core)
    records = [i for i in items if isinstance(i, BehaviourEvent | CustomerProfile)]
    return records if limit is None else records[:limit]


def traffic_records(events: int, seed: int = 3) -> list[Record]:
    """`events` generated events (plus their profiles) spread over about an hour of event time."""
    cfg = TrafficConfig(
        events=events,
        customers=max(10, events // 20),
        rate=max(1.0, events * 1000 / HOUR),
        seed=seed,
    )
    return [i for i in Traffic(cfg) if isinstance(i, BehaviourEvent | CustomerProfile)]


def encoded(records: Sequence[Record]) -> list[tuple[bool, bytes]]:
    """(is_event, Avro bytes) of each record, as the topics carry them."""
    return [
        (True, encode_event(r)) if isinstance(r, BehaviourEvent) else (False, encode_profile(r))
        for r in records
    ]


# ------------------------------------------------------------------ measuring


class _Timers:
    """Seconds spent in Core._snapshot (an instance wrapper)."""

    NAMES = ("snapshot",)

    def __init__(self, core: Core) -> None:
        self.seconds = dict.fromkeys(self.NAMES, 0.0)
        self.calls = dict.fromkeys(self.NAMES, 0)
        core._snapshot = self._wrap("snapshot", core._snapshot)  # type: ignore[method-assign]

    def reset(self) -> None:
        """Zero the counters (before a round)."""
        for name in self.NAMES:
            self.seconds[name] = 0.0
            self.calls[name] = 0

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.perf_counter
        seconds, calls = self.seconds, self.calls

        def timed(*args: Any) -> Any:
            started = clock()
            try:
                return fn(*args)
            finally:
                seconds[name] += clock() - started
                calls[name] += 1

        return timed


def run_once(
    core: Core,
    records: Sequence[Record],
    clock_ms: int,
    fire_every: int = FIRE_EVERY,
    also: Callable[[Output], None] | None = None,
) -> tuple[float, float, Counter[str], list[PayloadRequest]]:
    """One pass of the keyed stage (reference runner, end-of-input flush included):
    (wall seconds, CPU seconds of this process, outputs by kind, the payload requests).
    `also` sees every output too."""
    counts: Counter[str] = Counter()
    requests: list[PayloadRequest] = []
    keep = requests.append

    def emit(out: Output) -> None:
        counts[out[0]] += 1
        if out[0] == PAYLOAD:
            keep(out[1])
        if also is not None:
            also(out)

    runner = ReferenceRunner(
        core, emit, clock=lambda: clock_ms, compose=False, fire_every=fire_every
    )
    feed = runner.feed
    cpu = time.process_time()
    started = time.perf_counter()
    for record in records:
        feed(record)
    runner.finish()
    return time.perf_counter() - started, time.process_time() - cpu, counts, requests


def compose_once(core: Core, requests: Sequence[PayloadRequest]) -> tuple[float, float]:
    """One pass of the compose stage over `requests` (wall, CPU s)."""
    compose = core.compose
    cpu = time.process_time()
    started = time.perf_counter()
    for request in requests:
        compose(request)
    return time.perf_counter() - started, time.process_time() - cpu


def decode_once(
    raws: Sequence[tuple[bool, bytes]], core: CoreSettings, clock_ms: int
) -> tuple[float, float]:
    """One pass of the baseline: decode every record's bytes, nothing else (wall, CPU s)."""
    origin = Origin("bench", 0, 0)
    cpu = time.process_time()
    started = time.perf_counter()
    for is_event, raw in raws:
        if is_event:
            decode_event(raw, origin, clock_ms, core, clock_ms)
        else:
            decode_profile(raw, origin, core, clock_ms)
    return time.perf_counter() - started, time.process_time() - cpu


def measure(
    core: Core,
    timers: _Timers,
    records: Sequence[Record],
    settings: CoreSettings,
    rounds: int,
    say: Callable[[str], None] = print,
    fire_every: int = FIRE_EVERY,
) -> dict[str, Any]:
    """Rounds of (baseline, core) over the same records; rates, shares and output counts."""
    n = len(records)
    clock_ms = max((event_time(r) for r in records), default=0)  # the future check passes
    raws = encoded(records)
    _, _, _, warm = run_once(core, records[:WARMUP_ITEMS], clock_ms)
    compose_once(core, warm)  # compile the templates first
    per_round = []
    for i in range(rounds):
        decode_s, decode_cpu_s = decode_once(raws, settings, clock_ms)
        timers.reset()
        core_s, core_cpu_s, counts, requests = run_once(core, records, clock_ms, fire_every)
        compose_s, compose_cpu_s = compose_once(core, requests)
        r: dict[str, Any] = {
            "core_per_s": n / core_s,
            "decode_per_s": n / decode_s,
            "core_per_cpu_s": n / max(1e-9, core_cpu_s),
            "decode_per_cpu_s": n / max(1e-9, decode_cpu_s),
            "whole_per_s": n / (core_s + compose_s),
            "whole_per_cpu_s": n / max(1e-9, core_cpu_s + compose_cpu_s),
            "compose_per_s": len(requests) / max(1e-9, compose_s),
            "core_s": core_s,
            "core_cpu_s": core_cpu_s,
            "compose_s": compose_s,
            "compose_calls": len(requests),
            **{f"{k}_s": v for k, v in timers.seconds.items()},
            **{f"{k}_calls": v for k, v in timers.calls.items()},
            "outputs": dict(counts),
        }
        r["excl_snapshot_per_s"] = n / max(1e-9, core_s - r["snapshot_s"])
        per_round.append(r)
        say(
            f"round {i + 1}/{rounds}: keyed {r['core_per_s']:,.0f}/s, "
            f"decode only {r['decode_per_s']:,.0f}/s, "
            f"keyed per CPU second {r['core_per_cpu_s']:,.0f}, "
            f"compose {r['compose_per_s']:,.0f} payloads/s, "
            f"whole {r['whole_per_s']:,.0f}/s"
        )
    best = max(per_round, key=lambda r: r["core_per_s"])
    return {
        "records": n,
        "events": sum(isinstance(r, BehaviourEvent) for r in records),
        "rounds": rounds,
        "best": _rounded(best),
        "median": {
            key: round(statistics.median(r[key] for r in per_round), 1)
            for key in (
                "core_per_s",
                "decode_per_s",
                "core_per_cpu_s",
                "decode_per_cpu_s",
                "whole_per_s",
                "whole_per_cpu_s",
                "compose_per_s",
                "excl_snapshot_per_s",
            )
        },
        "per_round": [_rounded(r) for r in per_round],
    }


def measure_bound(
    core: Core,
    records: Sequence[Record],
    settings: CoreSettings,
    rounds: int,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Rounds of (keyed core, bound) over the same records, after checking that the bound
    gives the core's snapshots, payload ids and audit decisions (else ValueError)."""
    n = len(records)
    clock_ms = max((event_time(r) for r in records), default=0)
    kept = (FEATURES, PAYLOAD, AUDIT)
    by_core: list[Output] = []
    run_once(core, records, clock_ms, also=by_core.append)
    by_bound = core_bound.bound_run(records, settings, clock_ms)
    ours = sorted((core_bound.comparable(o) for o in by_core if o[0] in kept), key=repr)
    its = sorted((core_bound.comparable_bound(o) for o in by_bound if o[0] in kept), key=repr)
    if ours != its:
        raise ValueError("the bound's outputs differ from the core's: it is not the same work")
    per_round = []
    for i in range(rounds):
        core_cpu = time.process_time()
        run_once(core, records, clock_ms)
        core_cpu_s = time.process_time() - core_cpu
        bound_cpu = time.process_time()
        core_bound.bound_run(records, settings, clock_ms)
        bound_cpu_s = time.process_time() - bound_cpu
        per_round.append((n / max(1e-9, core_cpu_s), n / max(1e-9, bound_cpu_s)))
        say(
            f"round {i + 1}/{rounds}: keyed {per_round[-1][0]:,.0f} records per CPU second, "
            f"bound {per_round[-1][1]:,.0f}"
        )
    return {
        "records": n,
        "rounds": rounds,
        "same_outputs": len(ours),
        "core_per_cpu_s": round(statistics.median(r[0] for r in per_round)),
        "bound_per_cpu_s": round(statistics.median(r[1] for r in per_round)),
        "bound_best_per_cpu_s": round(max(r[1] for r in per_round)),
    }


def _rounded(r: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


# ------------------------------------------------------------------ reporting


def _rows(label: str, m: dict[str, Any], rounds: int) -> list[Row]:
    best, median = m["best"], m["median"]
    target = Target("value", ">=", CORE_TARGET, ">= 100 000/s")
    what = f"{label}, {m['records']} records"
    core_s = best["core_s"]
    rows = [
        Row(
            "core",
            f"keyed core records/s, {what} (best of {rounds})",
            round(best["core_per_s"]),
            "records/s",
            round(best["decode_per_s"]),
            "decode-only loop, same bytes",
            target=target,
        ),
    ]
    if rounds > 1:
        rows.append(
            Row(
                "core",
                f"keyed core records/s, {what} (median of {rounds})",
                round(median["core_per_s"]),
                "records/s",
                round(median["decode_per_s"]),
                "decode-only loop, median",
                target=target,
            )
        )
    return rows + [
        Row(
            "core",
            f"keyed core records per CPU second, {label} (best)",
            round(best["core_per_cpu_s"]),
            "records/CPU-s",
            round(best["decode_per_cpu_s"]),
            "decode-only loop, per CPU second",
            note="CPU time of the process: what an unshared core would do",
            target=target,
        ),
        Row(
            "core",
            f"compose stage payloads/s (recommend, render), {label} (best round)",
            round(best["compose_per_s"]),
            "payloads/s",
            note=f"{best['compose_calls']} payloads; stateless, scales out apart from the keyed",
        ),
        Row(
            "core",
            f"whole core (keyed + compose, one process) records/s, {label} (best round)",
            round(best["whole_per_s"]),
            "records/s",
            round(best["core_per_s"]),
            "keyed core alone",
            target=target,
        ),
        Row(
            "core",
            f"share of the keyed time in _snapshot (feature snapshots), {label}",
            round(100 * best["snapshot_s"] / core_s, 1),
            "%",
            note=f"{best['snapshot_calls']} snapshots",
        ),
    ]


def _bound_row(m: dict[str, Any]) -> Row:
    return Row(
        "core",
        f"bound: the same rules inlined in one loop, shipped rees46 data, {m['records']} records "
        f"(median of {m['rounds']}, per CPU second)",
        m["bound_per_cpu_s"],
        "records/CPU-s",
        m["core_per_cpu_s"],
        "keyed core, same rounds",
        note="runners/bench/core_bound.py: what any pure-Python shape of these rules can do here",
        target=Target("value", ">=", CORE_TARGET, ">= 100 000/s"),
    )


def _bound_note(m: dict[str, Any]) -> str:
    return (
        f"bound: {m['same_outputs']} snapshots, payload ids and audit decisions equal to the "
        f"core's; {m['bound_per_cpu_s']:,} records per CPU second "
        f"(best {m['bound_best_per_cpu_s']:,}) against the keyed core's {m['core_per_cpu_s']:,} "
        "in the same rounds"
    )


def _note(label: str, m: dict[str, Any]) -> str:
    b = m["best"]
    payloads = b["compose_calls"]
    per_payload = 1000 * b["compose_s"] / payloads if payloads else 0.0
    rest_us = 1e6 * (b["core_s"] - b["snapshot_s"]) / max(1, m["records"])
    per_snapshot_us = 1e6 * b["snapshot_s"] / max(1, b["snapshot_calls"])
    return (
        f"{label}: {m['records']} records ({m['events']} events), {payloads} payloads "
        f"({100 * payloads / max(1, m['records']):.1f}% of records), outputs {b['outputs']}; "
        f"best round: keyed {b['core_s']:.2f} s ({per_snapshot_us:.0f} us per snapshot, "
        f"{rest_us:.1f} us per record for everything else), compose {per_payload:.2f} ms per "
        f"payload"
    )


def profile_core(core: Core, records: Sequence[Record], out_dir: Path) -> list[dict[str, Any]]:
    """cProfile one pass over `records`; writes out_dir/core_profile.txt; the top own-time rows.

    `core` should be unwrapped (no _Timers), so the profile shows only the core's own frames.
    With pyinstrument installed (a dev dependency), a second pass writes its call tree to
    out_dir/core_pyinstrument.txt.
    """
    clock_ms = max((event_time(r) for r in records), default=0)
    compose_once(core, run_once(core, records[:WARMUP_ITEMS], clock_ms)[3])  # compile templates
    profiler = cProfile.Profile()
    profiler.enable()
    compose_once(core, run_once(core, records, clock_ms)[3])
    profiler.disable()
    # (file, line, function) -> (primitive calls, calls, own s, cumulative s, callers)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in raw.values())
    top = []
    for (path, line, name), (_, calls, own, cum, _) in sorted(
        raw.items(), key=lambda kv: kv[1][2], reverse=True
    )[:25]:
        top.append(
            {
                "function": f"{_short(path)}:{line}({name})",
                "calls": calls,
                "own_pct": round(100 * own / total, 1),
                "cum_pct": round(100 * cum / total, 1),
            }
        )
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    lines = [
        f"cProfile of one pass over {len(records)} records; total {total:.2f} s",
        "",
        "own time (tottime), top 25:",
        "",
    ]
    lines += [
        f"{t['own_pct']:5.1f}%  cum {t['cum_pct']:5.1f}%  {t['calls']:>8}  {t['function']}"
        for t in top
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "core_profile.txt").write_text("\n".join(lines) + "\n\n" + text.getvalue())
    try:
        from pyinstrument import Profiler
    except ImportError:
        return top
    sampler = Profiler(interval=0.0005)
    sampler.start()
    compose_once(core, run_once(core, records, clock_ms)[3])
    sampler.stop()
    (out_dir / "core_pyinstrument.txt").write_text(
        sampler.output_text(unicode=True, color=False, show_all=False)
    )
    return top


def _short(path: str) -> str:
    """A profiled file's path relative to the repository or site-packages."""
    if path.startswith(_ROOT):
        return path[len(_ROOT) :]
    return path.split("site-packages/", 1)[-1]
