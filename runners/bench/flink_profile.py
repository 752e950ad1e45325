"""Where a Flink bench job's time goes: py-spy on the mini-cluster's JVM (thread mode: the
Python operators run in the JVM's embedded interpreter), beside the CPU the JVM spent.

    python -m runners.bench.flink_profile [--job topology|products|fused|floor|passthrough]
                                          [--events N] [--rate HZ] [--out DIR]
        -> DIR/pyspy-<job>.txt (collapsed stacks) and a breakdown on stdout: CPU us per
           record of the whole run, and per category the us per record of the samples with
           a Python frame (py-spy sees a task thread only while it runs Python; the rest of
           the CPU is Java: Kafka, serializers, the state backend, checkpoints).

The job is the bench's (runners/bench/flink.py: same topics, same sample, bounded read). py-spy
samples at `--rate` per second per thread (py-spy 0.4, `--nonblocking`, so the JVM is not
paused), from the job's start to its end; start-up (JVM, interpreters) is in the CPU but
hardly in the Python samples. Categories are found by the frames of each stack, the first
rule that matches from the top of CATEGORIES wins.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runners.bench import flink as bench_flink
from transforms.settings import load_settings

# (category, substrings of a frame): a stack's category is that of its leaf-most frame that
# matches a rule (rules in this order within one frame); pickling under a state call is the
# state's, under an operator's output the element conversion's.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("state write: call into Java", ("update (pyflink/fn_execution/datastream/embedded/state",
                                     "clear (pyflink/fn_execution/datastream/embedded/state")),
    ("state read: call into Java", ("value (pyflink/fn_execution/datastream/embedded/state",)),
    ("timers", ("register_event_time_timer", "delete_event_time_timer", "current_watermark")),
    ("metrics", ("._count (", "counter (")),
    ("kafka client (decoders' offsets)", ("kafka/net", "kafka/protocol", "kafka/consumer",
                                          "offsets_consumer", "partition_offsets")),
    ("decode (wire.decode, Avro)", ("decode (pipelines/wire", "decode_event", "decode_profile")),
    ("decode: clock and admit", ("observe (", "admit (", "partition_watermark", "_ask_offsets",
                                 "Decode.process_element")),
    ("core: feature snapshots", ("_snapshot (",)),
    ("core: step / wake", ("step (pipelines/wire", "wake (pipelines/wire", "step (transforms",
                           "wake (transforms")),
    ("PerCustomer: own code", ("PerCustomer.",)),
    ("compose (render)", ("Compose.map", "compose (transforms")),
    ("encode to Kafka rows", ("KafkaRow.map",)),
    ("element conversion Java<->Python", ("converters.py", "operations.py",
                                          "operation_utils.py", "side_output_context")),
)


def category(stack: str) -> str:
    """The category of one collapsed stack (frames from the thread down to the leaf)."""
    frames = stack.split(";")
    for i in range(len(frames) - 1, 0, -1):
        frame = frames[i]
        if "converters.py" in frame and "embedded/state" in frames[i - 1]:
            return ("state write: pickle.dumps" if "to_external" in frame
                    else "state read: pickle.loads")
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other Python"


def breakdown(collapsed: Path, rate: float, records: int) -> list[tuple[str, int, float]]:
    """(category, samples, us per record) from py-spy's collapsed stacks at `rate` Hz."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if ";" in stack and n.isdigit():       # a thread with no Python frame: in Java
            counts[category(stack)] += int(n)
    per_sample_us = 1e6 / rate
    return [(name, n, n * per_sample_us / records) for name, n in counts.most_common()]


def _jvm_pid(parent: int) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == parent and b"java" in cmd:
            return int(pid)
    return None


def profile_job(job: str, events: int, rate: float, out: Path,
                overrides: list[str]) -> dict[str, Any]:
    """Produce `events` records, run `job` over them under py-spy; the breakdown."""
    settings = bench_flink.bench_settings(load_settings(None, os.environ, overrides))
    n = bench_flink.produce_items(settings, bench_flink.workload(events))
    if job == "products":           # the topology with a catalog stream: the product stage
        bench_flink.with_catalog(settings)
    bench_flink._timed_run(settings, "passthrough", 100)        # the JVM and gateway up
    jvm = _jvm_pid(os.getpid())
    if jvm is None:
        raise SystemExit("no JVM child found")
    out.mkdir(parents=True, exist_ok=True)
    collapsed = out / f"pyspy-{job}.txt"
    spy = subprocess.Popen(                                     # noqa: S603 - our own tool
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(jvm),
         "--rate", str(int(rate)), "--format", "raw", "--nonblocking", "--threads",
         "-o", str(collapsed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2.0)                                             # attached before the job runs
    cpu: dict[str, float] = {}
    wall = bench_flink._timed_run(settings, job, n, cpu)
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
    assert spy.stderr is not None
    errors = spy.stderr.read().decode(errors="replace").strip()
    if errors:
        print("py-spy:", errors[-2000:], file=sys.stderr)
    rows = breakdown(collapsed, rate, n) if collapsed.exists() else []
    return {"job": job, "records": n, "wall_s": round(wall, 1),
            "cpu_us_per_record": round(cpu.get("s", 0.0) / n * 1e6, 1),
            "python_us_per_record": round(sum(r[2] for r in rows), 1), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Profile one job; print the breakdown."""
    p = argparse.ArgumentParser(prog="python -m runners.bench.flink_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", default="topology",
                   choices=("topology", "products", "fused", "floor", "passthrough"))
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--out", type=Path, default=Path("out/bench"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    result = profile_job(args.job, args.events, args.rate, args.out, args.overrides)
    print(f"{result['job']}: {result['records']} records, {result['wall_s']} s wall, "
          f"{result['cpu_us_per_record']} us CPU per record (JVM incl. start-up), "
          f"{result['python_us_per_record']} us per record in Python frames")
    for name, samples, us in result["rows"]:
        print(f"  {name:40s} {samples:7d} samples {us:8.1f} us/record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
