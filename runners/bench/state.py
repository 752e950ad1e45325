"""Bytes of state per active customer, as the engines store it: a pickled CustomerState.

    state_scenario(settings, Sizes, Context) -> Outcome   (runners/bench/__init__.py runs it)

Per population (10k and 100k customers): generated traffic, `state_events_per_customer` events
per customer over two hours of event time, streamed through the core by the reference runner
and stopped at the end of the input before the end-of-input flush. Every customer who sent
something then holds live state (dedup ids alone live 24 h): that is an active customer. Each
live state is pickled with pickle.HIGHEST_PROTOCOL, as Beam's PickleCoder stores it in the
ReadModifyWriteState (PyFlink keeps pickled bytes too).

Baseline: the Avro bytes of the records each active customer sent (what the input topics hold
for them), so the ratio says how much bigger the memory of a customer is than its input.
Also reported: process RSS before and after the feed (its growth per active customer is an
upper bound of the in-memory size: it includes the generator's own bookkeeping per customer);
mean pickled bytes per part of the state over a sample (what the bytes are); and, for the
smallest population, that all state expires: after the flush (the watermark at the end of
time) no customer holds state.

1M customers (full runs only; generating and running 4M events would take most of an hour
here, and 1M live Python states several GB): the largest population's live states cloned under
new customer ids up to 1M, held as pickled bytes in a dict, as a state backend holds serialized
state: total bytes and RSS growth.
"""

from __future__ import annotations

import gc
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

from pipelines.common import build_core
from pipelines.reference import ReferenceRunner
from runners.bench import Context, Outcome, Row, Sizes, Target
from runners.traffic import Traffic, TrafficConfig
from transforms.codec import encode_event, encode_profile
from transforms.core import Core
from transforms.model import BehaviourEvent, CustomerProfile, Output
from transforms.settings import HOUR, Settings
from transforms.state import CustomerState

SPAN = 2 * HOUR  # event time the traffic of a population covers
PART_SAMPLE = 2000  # states whose parts are pickled one by one
PROTOCOL = pickle.HIGHEST_PROTOCOL


def state_scenario(settings: Settings, sizes: Sizes, ctx: Context) -> Outcome:
    """Every population through the core, then (full runs) the 1M clone."""
    outcome = Outcome()
    core = build_core(settings)
    blobs: list[bytes] = []
    for i, customers in enumerate(sizes.state_customers):
        largest = i == len(sizes.state_customers) - 1
        ctx.say(f"{customers} customers, {sizes.state_events_per_customer:g} events each")
        m, blobs = measure_population(
            core,
            customers,
            sizes.state_events_per_customer,
            expire=i == 0,
            say=ctx.say,
            keep_blobs=largest and sizes.state_replicate_to is not None,
        )
        outcome.details[f"customers_{customers}"] = m
        outcome.rows += _rows(customers, m)
        outcome.notes.append(_note(customers, m))
    if sizes.state_replicate_to and blobs:
        ctx.say(f"cloning {len(blobs)} live states up to {sizes.state_replicate_to} customers")
        r = replicate(blobs, sizes.state_replicate_to)
        outcome.details[f"customers_{sizes.state_replicate_to}_cloned"] = r
        n = r["customers"]
        outcome.rows += [
            Row(
                "state",
                f"pickled state held for {n} customers (cloned)",
                round(r["pickled_bytes"] / 2**20),
                "MB",
                note=f"{round(r['pickled_bytes'] / n)} B per customer",
            ),
            Row(
                "state",
                f"RSS growth holding {n} pickled states",
                round(r["rss_growth_kb"] / 1024),
                "MB",
                round(r["pickled_bytes"] / 2**20),
                "their pickled bytes",
            ),
        ]
        outcome.notes.append(
            f"{n} customers: the {len(blobs)} live states of the largest population cloned "
            f"{r['copies']} times under new ids (not driven through the core) and held pickled; "
            f"process RSS {round(r['rss_after_kb'] / 1024)} MB"
        )
    return outcome


def measure_population(
    core: Core,
    customers: int,
    events_per_customer: float,
    expire: bool = False,
    say: Callable[[str], None] = print,
    keep_blobs: bool = False,
) -> tuple[dict[str, Any], list[bytes]]:
    """Feed one population's traffic; pickled sizes of the live states, raw input bytes, RSS."""
    events = max(1, int(customers * events_per_customer))
    cfg = TrafficConfig(events=events, customers=customers, rate=events * 1000 / SPAN, seed=11)
    clock_ms = cfg.start + 2 * SPAN  # the future check runs and passes
    raw: dict[str, int] = {}

    def discard(out: Output) -> None:
        pass

    gc.collect()
    rss_before = rss_kb()
    runner = ReferenceRunner(core, discard, clock=lambda: clock_ms)
    started = time.perf_counter()
    records = 0
    for item in Traffic(cfg):
        if isinstance(item, BehaviourEvent):
            size = len(encode_event(item))
        elif isinstance(item, CustomerProfile):
            size = len(encode_profile(item))
        else:
            continue
        raw[item.customer_id] = raw.get(item.customer_id, 0) + size
        runner.feed(item)
        records += 1
    if runner.watermark is not None:
        # The timers the watermark has passed fire, as an engine's do when it advances; the
        # runner's last round of them may not have come yet (its pending items would count).
        runner.advance(runner.watermark)
    feed_s = time.perf_counter() - started
    gc.collect()
    rss_after = rss_kb()
    states = runner.states
    active = len(states)
    say(
        f"{records} records in {feed_s:.1f} s; {active} active customers; "
        f"RSS {rss_before // 1024} -> {rss_after // 1024} MB"
    )
    blobs = [pickle.dumps(s, PROTOCOL) for s in states.values()]
    sizes = sorted(len(b) for b in blobs)
    raw_active = sum(raw.get(cid, 0) for cid in states)
    m: dict[str, Any] = {
        "population": customers,
        "records": records,
        "feed_seconds": round(feed_s, 2),
        "active_customers": active,
        "customers_with_input": len(raw),
        "pickled_bytes_mean": round(statistics.fmean(sizes), 1) if sizes else 0,
        "pickled_bytes_p50": _pct(sizes, 0.50),
        "pickled_bytes_p99": _pct(sizes, 0.99),
        "pickled_bytes_max": sizes[-1] if sizes else 0,
        "pickled_bytes_total": sum(sizes),
        "raw_input_bytes_per_active": round(raw_active / active, 1) if active else 0,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_growth_per_active_bytes": round(1024 * (rss_after - rss_before) / active)
        if active
        else 0,
        "pending_items": sum(len(s.pending) for s in states.values()),
        "parts_mean_bytes": parts(list(states.values())[:PART_SAMPLE]),
    }
    if expire:
        started = time.perf_counter()
        runner.finish()
        m["states_after_flush"] = len(runner.states)
        m["flush_seconds"] = round(time.perf_counter() - started, 2)
        say(f"end-of-input flush: {m['states_after_flush']} states left ({m['flush_seconds']} s)")
    return m, blobs if keep_blobs else []


def parts(states: list[CustomerState]) -> dict[str, float]:
    """Mean pickled bytes of each part of the state (each pickled alone: no shared memo)."""
    if not states:
        return {}
    sums = dict.fromkeys(CustomerState.__slots__, 0)
    for s in states:
        for name in CustomerState.__slots__:
            sums[name] += len(pickle.dumps(getattr(s, name), PROTOCOL))
    means = {k: round(v / len(states), 1) for k, v in sums.items()}
    return dict(sorted(means.items(), key=lambda kv: kv[1], reverse=True))


def replicate(blobs: list[bytes], target: int) -> dict[str, Any]:
    """Hold `target` pickled states: `blobs` again and again under new customer ids.

    A copy's id is the original with its first character replaced (same length, so the pickle
    stays valid byte for byte; every occurrence is replaced: the id inside the profile and the
    pending items too). Re-pickling a million states would take minutes; this takes seconds.
    """
    ids = [pickle.loads(blob).customer_id for blob in blobs]
    gc.collect()
    rss_before = rss_kb()
    started = time.perf_counter()
    store: dict[str, bytes] = {}
    copy = 0
    while len(store) < target:
        if copy >= len(_COPY_MARKS):
            raise ValueError(f"too few live states ({len(blobs)}) to clone up to {target}")
        mark = _COPY_MARKS[copy]
        for cid, blob in zip(ids, blobs, strict=True):
            if len(store) >= target:
                break
            new = mark + cid[1:]
            store[new] = blob.replace(cid.encode(), new.encode())
        copy += 1
    seconds = time.perf_counter() - started
    gc.collect()
    rss_after = rss_kb()
    sample = next(iter(store.items()))
    if pickle.loads(sample[1]).customer_id != sample[0]:
        raise AssertionError("a cloned state does not unpickle to its new customer id")
    return {
        "customers": len(store),
        "copies": copy,
        "pickled_bytes": sum(len(b) for b in store.values()),
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_growth_kb": rss_after - rss_before,
        "seconds": round(seconds, 1),
    }


# First characters of cloned ids: none is a digit, so no clone collides with a generated id.
_COPY_MARKS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def rss_kb() -> int:
    """The current resident set of this process in kB (/proc/self/status VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _pct(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _rows(customers: int, m: dict[str, Any]) -> list[Row]:
    who = f"{customers} customers, {m['active_customers']} active"
    rows = [
        Row(
            "state",
            f"pickled state bytes per active customer ({who})",
            m["pickled_bytes_mean"],
            "B",
            m["raw_input_bytes_per_active"],
            "Avro bytes of their input records",
            note=f"p99 {m['pickled_bytes_p99']} B, max {m['pickled_bytes_max']} B",
        ),
        Row(
            "state",
            f"process RSS after the feed ({who})",
            round(m["rss_after_kb"] / 1024),
            "MB",
            round(m["rss_before_kb"] / 1024),
            "before the feed",
            note=f"growth {m['rss_growth_per_active_bytes']} B per active customer, upper bound",
        ),
    ]
    if "states_after_flush" in m:
        rows.append(
            Row(
                "state",
                f"customers holding state after the end-of-input flush ({customers})",
                m["states_after_flush"],
                "states",
                target=Target("value", "==", 0, "0 (all state expires)"),
            )
        )
    return rows


def _note(customers: int, m: dict[str, Any]) -> str:
    top = ", ".join(f"{k} {v:g}" for k, v in list(m["parts_mean_bytes"].items())[:6])
    return (
        f"{customers} customers: {m['records']} records through the core in "
        f"{m['feed_seconds']} s, {m['active_customers']} active; pickled state p50 "
        f"{m['pickled_bytes_p50']} B, p99 {m['pickled_bytes_p99']} B, max "
        f"{m['pickled_bytes_max']} B; largest parts (mean B, pickled alone): {top}"
    )
