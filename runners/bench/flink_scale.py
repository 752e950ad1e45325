"""Does the Flink topology scale out? Parallelism 1 against 2 on the standalone cluster of
`personalize services` (DESIGN.md section 7: p2 >= 1.6x p1 on a machine with enough cores).

    scale(settings, events, floor_events, parallelisms) -> {"topology_p1_eps", "topology_p2_eps",
        "topology_rate_ratio", "topology_cpu_ratio", "floor_...", "layout", "load_average_*"}

The input is produced once, the bench's own way (runners/bench/flink.py `produce_items`: the
shipped rees46 sample with synthesized profiles, cycled into new traffic, keyed by customer,
event times as record timestamps) to fresh topics, the events topic of `--partitions`
partitions (4 by default; profiles 1). Then, on the cluster, at each parallelism:

    topology   the production Kafka job, pipelines/flink_job.py submitted by
               runners/flink_cluster.submit_to_cluster, bounded by stop offsets (--max-events)
    floor      the keyed floor of runners/bench/flink.py (flink_floor_job.py): Kafka keyed by
               customer -> one Python keyed function that only reads/writes its state and
               sets/fires a timer -> Kafka: what the engine alone scales to on this machine

each twice, over all its records and over the first 5 % (fresh consumer group and
transactional ids each run). Rate = the difference in records over the difference in the
job's own duration (REST /jobs/<id>: submission to FINISHED), so start-up (deployment, the
Python operators' set-up) cancels out; CPU per record the same way from the CPU seconds
(utime + stime in /proc/<pid>/stat) of this cluster's TaskManager processes and their
children, summed, from the submission's return to the job's end (the client's own start-up,
a JVM and a Python that build the job, is not the cluster's work). Reported: rate and CPU
per record at each parallelism, the p2 / p1 ratios, how many TaskManagers ran each full run's
subtasks, and the load average at start and end.

Why one TaskManager per core: in thread mode (the default) the Python operators of every slot
of a TaskManager run in that JVM's one embedded interpreter and share its GIL, so parallelism 2
in one TaskManager cannot use two cores for Python. Run the cluster with one slot per
TaskManager, as many TaskManagers as the parallelism:

    personalize services up --only flink --set flink.taskmanagers=2 --set flink.task_slots=1
    python -m runners.bench.flink_scale --set flink.taskmanagers=2 --set flink.task_slots=1
    personalize bench --only flink_scale --set flink.taskmanagers=2 --set flink.task_slots=1

(the same --set on both: the bench finds the cluster by flink.jobmanager_port and its
processes by the state folder; started by `personalize bench`, the cluster is stopped after).
A cluster not started from this checkout's state folder is measured too, without CPU figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from runners.bench.flink import proc_table
from transforms.settings import Settings, load_settings

FLOOR_JOB = Path(__file__).with_name("flink_floor_job.py")
PARTITIONS = 4
EVENTS = 40_000            # topology records (full run; the small run is 5 % of it)
FLOOR_EVENTS = 200_000     # the floor is ~10x faster: more records, less noise
SMALL = 20                 # the small run reads 1 / SMALL of the full run's records
# The run's settings are the caller's as given (the production defaults): a bounded job ends
# with a final checkpoint, whose wait (up to flink.checkpoint_interval, 5 s) lands in each
# run's duration at random, which is why the full runs are long. A shorter interval shortens
# that wait but adds checkpoints, each writing every customer's state (hashmap backend);
# BENCHMARKS.md has a run at 1 s and one at 5 s (the 5 s one was not cheaper per record).
JOB_TIMEOUT = 1800.0


def cpu_seconds(roots: Iterable[int]) -> float | None:
    """CPU seconds (user + system) used so far by `roots` and all their descendants; None when
    /proc cannot tell (not Linux, or none of them alive)."""
    roots = set(roots)
    table = proc_table()
    if table is None:
        return None
    parent, cpu = table
    total, found = 0.0, False
    for pid, seconds in cpu.items():
        p: int | None = pid
        seen = 0
        while p is not None and p > 1 and p not in roots and seen < 64:
            p, seen = parent.get(p), seen + 1
        if p in roots:
            total += seconds
            found = True
    return total if found else None


def layout(cluster: Any) -> dict[str, Any]:
    """The cluster's TaskManagers and slots (/taskmanagers), and our TaskManager pids."""
    tms = cluster.rest("/taskmanagers").get("taskmanagers", [])
    return {"taskmanagers": len(tms),
            "slots_per_taskmanager": sorted(int(t.get("slotsNumber", 0)) for t in tms),
            "taskmanager_pids": cluster.taskmanager_pids(),
            "rest": cluster.endpoint}


def placement(cluster: Any, job_id: str) -> list[str]:
    """The TaskManagers (ids) that ran some subtask of the job."""
    found: set[str] = set()
    for vertex in cluster.rest(f"/jobs/{job_id}").get("vertices", []):
        answer = cluster.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
        for tm in answer.get("taskmanagers", []):
            found.add(str(tm.get("taskmanager-id") or tm.get("host")))
    return sorted(found)


def run_once(settings: Settings, job: str, records: int, parallelism: int) -> dict[str, Any]:
    """One bounded run of `job` ("topology" or "floor") over `records` records at
    `parallelism` on the cluster: its duration (REST), the client's wall time, the CPU seconds
    of our TaskManagers, and where its subtasks ran."""
    from runners.flink_cluster import job_args, submit_to_cluster
    from runners.services import kafka_connector_jar
    from runners.services._flink import Flink

    tag = f"{settings.kafka.group_id}-{job}-p{parallelism}-{records}-{uuid.uuid4().hex[:6]}"
    s = settings.with_overrides([f"flink.parallelism={parallelism}",
                                 f"flink.transactional_id_prefix={tag}"])
    options = argparse.Namespace(max_events=records, from_beginning=True, group_id=tag,
                                 job_name=tag, detached=True)
    cluster = Flink(s)
    tms = cluster.taskmanager_pids()
    start = time.perf_counter()
    if job == "topology":
        job_id = submit_to_cluster(s, options)
    else:
        job_id = cluster.submit(FLOOR_JOB, args=job_args(s, options),
                                jars=[kafka_connector_jar(s)], detached=True)
    # From here: the client (a JVM and a Python building the job, a minute on a busy host)
    # is done, and what the TaskManagers burn is the job's (plus their idle heartbeats).
    cpu_before = cpu_seconds(tms) if tms else None
    try:
        state = cluster.wait_job(job_id, timeout=JOB_TIMEOUT)
    finally:
        cluster.cancel(job_id)  # a no-op once it ended
    wall = time.perf_counter() - start
    cpu_after = cpu_seconds(tms) if tms else None
    if state != "FINISHED":
        raise RuntimeError(f"{job} at parallelism {parallelism}: job {job_id} ended {state}")
    info = cluster.rest(f"/jobs/{job_id}")
    return {"job_id": job_id, "job_s": info["duration"] / 1000.0, "wall_s": wall,
            "cpu_s": None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
            "taskmanagers_used": len(placement(cluster, job_id))}


def measure(settings: Settings, job: str, records: int, parallelism: int) -> dict[str, Any]:
    """Rate and CPU per record of `job` at `parallelism`: a 5 % and a full run, differenced."""
    small = max(1, records // SMALL)
    a = run_once(settings, job, small, parallelism)
    b = run_once(settings, job, records, parallelism)
    dt = b["job_s"] - a["job_s"]
    out: dict[str, Any] = {
        "records": records, "small_records": small,
        "small_s": round(a["job_s"], 2), "full_s": round(b["job_s"], 2),
        "small_wall_s": round(a["wall_s"], 2), "full_wall_s": round(b["wall_s"], 2),
        # A full run no longer than the 5 % one: start-up noise beat the work, no rate.
        "eps": round((records - small) / dt, 1) if dt > 0 else None,
        "cpu_us": None, "cpu_per_s": None,
        "taskmanagers_used": b["taskmanagers_used"],
    }
    if a["cpu_s"] is not None and b["cpu_s"] is not None:
        dcpu = b["cpu_s"] - a["cpu_s"]
        out["cpu_us"] = round(dcpu / (records - small) * 1e6, 1)
        # Cores the TaskManagers kept busy over the difference (2.0 = two full cores).
        out["cpu_per_s"] = round(dcpu / dt, 2) if dt > 0 else None
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def scale(settings: Settings, events: int = EVENTS, floor_events: int | None = FLOOR_EVENTS,
          parallelisms: Sequence[int] = (1, 2), partitions: int = PARTITIONS,
          say: Any = print) -> dict[str, Any]:
    """The topology (and, unless floor_events is None or 0, the keyed floor) at each
    parallelism on the running cluster, over the same topics; see the module doc."""
    from runners.bench.flink import bench_settings, produce_items, workload
    from runners.services import ServiceError
    from runners.services._flink import Flink

    s = bench_settings(settings, [f"kafka.partitions={partitions}"])
    cluster = Flink(s)
    if not cluster.healthy():
        raise ServiceError(f"flink: no healthy cluster at {cluster.endpoint} with "
                           f"{s.flink.taskmanagers} TaskManager(s): start it with `personalize "
                           "services up --only flink` and the same --set options")
    where = layout(cluster)
    slots = sum(where["slots_per_taskmanager"])
    if slots < max(parallelisms):
        raise ServiceError(f"flink: the cluster at {cluster.endpoint} has {slots} slot(s), "
                           f"parallelism {max(parallelisms)} needs that many")
    result: dict[str, Any] = {"load_average_start": [round(x, 2) for x in os.getloadavg()],
                              "cpus": os.cpu_count(), "layout": where,
                              "execution_mode": s.flink.execution_mode,
                              "partitions": partitions, "topics": f"{s.kafka.group_id}-*",
                              "checkpoint_interval_ms": s.flink.checkpoint_interval}
    jobs = [("topology", events)]
    if floor_events:
        jobs.insert(0, ("floor", floor_events))
    n = produce_items(s, workload(max(r for _, r in jobs)))
    result["produced"] = n
    say(f"produced {n} records to {s.kafka.group_id}-* ({partitions} partitions); cluster "
        f"{where['taskmanagers']} TaskManager(s), slots {where['slots_per_taskmanager']}")
    # Warm-up at the highest parallelism: every TaskManager's embedded Python imports the
    # project and PyFlink once, in its first job; that must not land in one measured run only.
    for job, _ in jobs:
        run_once(s, job, 100, max(parallelisms))
    for p in parallelisms:
        for job, records in jobs:
            say(f"{job} at parallelism {p}: {records} records (and 5 %)")
            r = measure(s, job, min(records, n), p)
            result[f"{job}_p{p}"] = r
            say(f"  {r['eps']} records/s, {r['cpu_us']} us CPU per record, "
                f"{r['taskmanagers_used']} TaskManager(s)")
    lo, hi = min(parallelisms), max(parallelisms)
    for job, _ in jobs:
        low, high = result[f"{job}_p{lo}"], result[f"{job}_p{hi}"]
        result[f"{job}_rate_ratio"] = _ratio(high["eps"], low["eps"])
        result[f"{job}_cpu_ratio"] = _ratio(high["cpu_us"], low["cpu_us"])
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def table(r: dict[str, Any], parallelisms: Sequence[int] = (1, 2)) -> str:
    """The result as a Markdown table."""
    lo, hi = min(parallelisms), max(parallelisms)
    lines = [f"| job | p={lo} records/s, CPU/record | p={hi} records/s, CPU/record | "
             f"p{hi}/p{lo} rate | p{hi}/p{lo} CPU per record | TaskManager cores busy p{lo} / "
             f"p{hi} |", "|---|---|---|---|---|---|"]
    for job in ("topology", "floor"):
        if f"{job}_p{lo}" not in r:
            continue
        a, b = r[f"{job}_p{lo}"], r[f"{job}_p{hi}"]
        lines.append(f"| {job} | {a['eps']}, {a['cpu_us']} us | {b['eps']}, {b['cpu_us']} us | "
                     f"{r[f'{job}_rate_ratio']} | {r[f'{job}_cpu_ratio']} | "
                     f"{a['cpu_per_s']} / {b['cpu_per_s']} |")
    return "\n".join(lines)


def scale_scenario(settings: Settings, sizes: Any, ctx: Any) -> Any:
    """`personalize bench --only flink_scale`: `scale` on the cluster of `personalize
    services` (started for the run if down, then stopped), topology at 2x the engine size."""
    from runners.bench import _need_services

    lease = _need_services(settings, ["kafka", "flink"], ctx)
    try:
        r = scale(settings, max(SMALL, 2 * sizes.engine_events), sizes.flink_passthrough,
                  say=ctx.say)
    finally:
        lease.release()
    return outcome(r)


def outcome(r: dict[str, Any]) -> Any:
    """The bench harness's rows of a `scale` result (p2 against p1)."""
    from runners.bench import Outcome, Row, Target

    where = r["layout"]
    shape = (f"{where['taskmanagers']} TaskManager(s), slots {where['slots_per_taskmanager']}, "
             f"{r['execution_mode']} mode, {r['partitions']} partitions, {r['cpus']} CPUs, load "
             f"{r['load_average_start']} -> {r['load_average_end']}")
    rows = []
    for job in ("topology", "floor"):
        if f"{job}_p1" not in r:
            continue
        low, high = r[f"{job}_p1"], r[f"{job}_p2"]
        rows.append(Row("flink_scale", f"{job} records/s at parallelism 2 on the standalone "
                        f"cluster ({high['records']} records; {shape})", high["eps"],
                        "records/s", low["eps"], "parallelism 1, same cluster and topics",
                        target=Target("ratio", ">=", 1.6, ">= 1.6 x p1 (enough cores)")
                        if job == "topology" else None,
                        note=f"p2 ran on {high['taskmanagers_used']} TaskManager(s)"))
        rows.append(Row("flink_scale", f"{job} CPU per record at parallelism 2 (TaskManager "
                        "processes)", high["cpu_us"], "us", low["cpu_us"], "parallelism 1"))
    return Outcome(rows=rows, details=r,
                   notes=[f"flink_scale: {shape}; a ratio below 1.6 with fewer free cores "
                          "than the parallelism measures the machine (see the CPU rows)"])


def main(argv: list[str] | None = None) -> int:
    """Parse, measure, print the result and its table."""
    p = argparse.ArgumentParser(prog="python -m runners.bench.flink_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=EVENTS, help="topology records (full run)")
    p.add_argument("--floor-events", type=int, default=FLOOR_EVENTS,
                   help="keyed floor records (0: no floor)")
    p.add_argument("--parallelism", default="1,2", help="comma-separated (default 1,2)")
    p.add_argument("--partitions", type=int, default=PARTITIONS,
                   help="partitions of the events topic")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="a setting, section.key=value (also how the cluster is found)")
    args = p.parse_args(argv)
    parallelisms = sorted({int(x) for x in args.parallelism.split(",") if x.strip()})
    if not parallelisms or parallelisms[0] < 1 or args.events < SMALL or args.partitions < 1:
        p.error("parallelism >= 1, events >= 20 and partitions >= 1 are needed")
    if args.partitions < parallelisms[-1]:
        p.error("give the events topic at least as many partitions as the parallelism")
    settings = load_settings(None, os.environ, args.overrides)
    r = scale(settings, args.events, args.floor_events, parallelisms, args.partitions)
    print("scale:", r, flush=True)
    print(table(r, parallelisms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
