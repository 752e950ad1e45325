"""`personalize services up|down|status`: the real Kafka, Redis and Flink cluster, on localhost.

All of their data, generated config, pid files and logs live under settings.paths.state_dir
(`.state/<service>/`); ports come from the settings. The functions here are what the CLI, the
test fixtures (tests/conftest.py) and other commands use:

    up(settings, only=("kafka",))          start what is not healthy, wait, create the topics
    down(settings)                         stop, and check that no process of ours is left
    status(settings)                       [ServiceStatus(name, state, endpoint, pids, ...)]
    ensure_topics(bootstrap, names, n)     create topics explicitly (auto-creation is off)
    submit_pyflink_job(settings, "job.py", jars=[kafka_connector_jar(settings)])  -> job id

Test sessions hold a `Lease`: services a test session started are stopped by the last
session to leave, and services someone started by hand are never stopped by tests.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runners.services._flink import Flink
from runners.services._kafka import Kafka, ensure_topics
from runners.services._proc import ServiceError, alive, file_lock, project_path
from runners.services._redis import Redis
from runners.services._service import LocalService, ServiceStatus
from transforms.settings import Settings

__all__ = [
    "SERVICES",
    "FlinkCluster",
    "Lease",
    "ServiceError",
    "ServiceStatus",
    "cancel_flink_job",
    "down",
    "ensure_topics",
    "kafka_connector_jar",
    "list_flink_jobs",
    "status",
    "submit_pyflink_job",
    "up",
    "wait_flink_job",
]

log = logging.getLogger(__name__)

# The cluster's job API (submit, jobs, cancel, wait_job, rest) for tests and other commands.
FlinkCluster = Flink

# Start order; `down` goes the other way.
SERVICES = ("redis", "kafka", "flink")
_CLASSES: dict[str, type[LocalService]] = {"redis": Redis, "kafka": Kafka, "flink": Flink}
# A service with this file in its folder was started by a test session (see Lease).
_TEST_MARK = "started-by-tests"


def select(only: str | Iterable[str] | None) -> list[str]:
    """Service names in start order from "kafka,redis", a list, or None (= all)."""
    if only is None:
        return list(SERVICES)
    names = (
        [n.strip() for n in only.split(",")] if isinstance(only, str) else [n.strip() for n in only]
    )
    unknown = sorted(set(names) - set(SERVICES) - {""})
    if unknown:
        raise ServiceError(
            f"unknown service(s): {', '.join(unknown)} (known: {', '.join(SERVICES)})"
        )
    return [n for n in SERVICES if n in names]


def service(name: str, settings: Settings) -> LocalService:
    """The LocalService object for `name`."""
    return _CLASSES[name](settings)


def _state(settings: Settings) -> Path:
    return project_path(settings.paths.state_dir)


def up(
    settings: Settings,
    only: str | Iterable[str] | None = None,
    timeout: float | None = None,
    by_tests: bool = False,
    wait: bool = True,
) -> list[str]:
    """Start the selected services that are not healthy, wait until all are, create the topics.

    Returns the names it started. The services are launched together and then waited for; one
    that fails to come up is stopped again, the others are left running, and ServiceError says
    what failed and why (port taken, jars missing, the log's last lines, ...). `wait=False`
    only launches. `by_tests` marks what it starts as the test sessions' (see Lease); without
    it, `up` adopts the selected services, so that tests will not stop them.
    """
    errors: dict[str, str] = {}
    started: list[str] = []
    with file_lock(_state(settings) / "services.lock"):
        services = [service(n, settings) for n in select(only)]
        for svc in services:
            try:
                if svc.start():
                    started.append(svc.name)
            except ServiceError as exc:
                errors[svc.name] = str(exc)
            mark = svc.home / _TEST_MARK
            if by_tests and svc.name in started:
                mark.touch()
            elif not by_tests:
                mark.unlink(missing_ok=True)
        for svc in services if wait else ():
            if svc.name in errors:
                continue
            try:
                svc.wait_ready(timeout)
            except ServiceError as exc:
                errors[svc.name] = str(exc)
        for svc in services:
            if svc.name in errors and svc.name in started:
                with contextlib.suppress(ServiceError):
                    svc.stop()
                (svc.home / _TEST_MARK).unlink(missing_ok=True)
    if errors:
        raise ServiceError("\n".join(errors.values()))
    return started


def down(
    settings: Settings, only: str | Iterable[str] | None = None, timeout: float = 30.0
) -> list[int]:
    """Stop the selected services; returns pids that needed SIGKILL. Afterwards none of their
    processes runs (checked by scanning for them), or ServiceError says which survived."""
    with file_lock(_state(settings) / "services.lock"):
        return _stop(settings, select(only), timeout)


def _stop(settings: Settings, names: list[str], timeout: float) -> list[int]:
    # In parallel: a JVM takes seconds to shut down, and the services do not depend on each other.
    def stop_one(name: str) -> list[int]:
        svc = service(name, settings)
        killed = svc.stop(timeout)
        (svc.home / _TEST_MARK).unlink(missing_ok=True)
        left = svc.pids()
        if left:
            raise ServiceError(f"processes still running after stop: {left}")
        return killed

    killed: list[int] = []
    failures = []
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        for name, future in [(n, pool.submit(stop_one, n)) for n in names]:
            try:
                killed += future.result()
            except ServiceError as exc:
                failures.append(f"{name}: {exc}")
    if failures:
        raise ServiceError("\n".join(failures))
    return killed


def status(settings: Settings, only: str | Iterable[str] | None = None) -> list[ServiceStatus]:
    """The state of each selected service."""
    return [service(n, settings).status() for n in select(only)]


# --- Flink jobs --------------------------------------------------------------------------------


def kafka_connector_jar(settings: Settings) -> Path:
    """The flink-sql-connector-kafka jar fetched by runners/bootstrap.sh into .jars/flink."""
    found = sorted(
        (project_path(settings.paths.jars_dir) / "flink").glob("flink-sql-connector-kafka-*.jar")
    )
    if not found:
        raise ServiceError(
            "jars missing: flink-sql-connector-kafka not in .jars/flink: run runners/bootstrap.sh"
        )
    return found[-1]


def submit_pyflink_job(
    settings: Settings,
    py_file: str | Path,
    args: Sequence[str] = (),
    py_files: Sequence[str | Path] = (),
    jars: Sequence[str | Path] = (),
    detached: bool = True,
    timeout: float = 300.0,
) -> str:
    """`pyflink/bin/flink run -py FILE` on the local cluster; returns the job id."""
    return Flink(settings).submit(py_file, args, py_files, jars, detached, timeout)


def list_flink_jobs(settings: Settings) -> list[dict[str, Any]]:
    """The cluster's jobs (jid, name, state, ...)."""
    return Flink(settings).jobs()


def cancel_flink_job(settings: Settings, job_id: str) -> None:
    """Cancel a job on the local cluster."""
    Flink(settings).cancel(job_id)


def wait_flink_job(settings: Settings, job_id: str, timeout: float = 120.0) -> str:
    """Wait for a job to end; its final state (ServiceError with the cause if it FAILED)."""
    return Flink(settings).wait_job(job_id, timeout)


# --- test sessions -----------------------------------------------------------------------------


class Lease:
    """The services one test session uses.

    `need(name)` makes a service healthy, starting it if needed (marked as started by tests).
    `release()` drops this session's lease; the last live session to leave stops the services
    that test sessions started, so concurrent sessions never pull one out from under another,
    and services started by hand (`personalize services up`) are left alone.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = _state(settings) / "leases"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / str(os.getpid())
        self.file.touch()

    def need(self, name: str, also: Iterable[str] = (), timeout: float | None = None) -> None:
        """Make `name` healthy for this session (ServiceError if it cannot come up).

        The services in `also` (those the session's other tests will need) are launched at the
        same time without waiting for them, so a session's services come up side by side; an
        error of theirs is reported by their own `need`.
        """
        others = [n for n in select(list(also)) if n != name]
        if others:
            up(self.settings, [name], by_tests=True, wait=False)  # the one needed now goes first
            with contextlib.suppress(ServiceError):
                up(self.settings, others, by_tests=True, wait=False)
        up(self.settings, [name], timeout=timeout, by_tests=True)

    def release(self, timeout: float = 30.0) -> list[str]:
        """Drop the lease; the services it stopped (only when no other session holds one)."""
        self.file.unlink(missing_ok=True)
        with file_lock(_state(self.settings) / "services.lock"):
            others = [p for p in self.dir.iterdir() if p.name.isdigit() and alive(int(p.name))]
            for stale in self.dir.iterdir():
                if stale not in others:
                    stale.unlink(missing_ok=True)
            if others:
                return []
            ours = [n for n in SERVICES if (service(n, self.settings).home / _TEST_MARK).exists()]
            _stop(self.settings, ours, timeout)
        return ours


# --- command line ------------------------------------------------------------------------------


def register(
    subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]
) -> None:
    """Add `services up|down|status`."""
    parser = subparsers.add_parser(
        "services",
        parents=parents,
        help="start, stop or check the local Kafka, Redis and Flink cluster",
        description=__doc__.split("\n\n")[0],
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    only = argparse.ArgumentParser(add_help=False)
    only.add_argument(
        "--only",
        metavar="NAMES",
        default=None,
        help=f"comma-separated subset of {','.join(SERVICES)} (default: all)",
    )
    p_up = actions.add_parser(
        "up", parents=[*parents, only], help="start (idempotent), wait until healthy, create topics"
    )
    p_up.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="seconds to wait per service"
    )
    p_down = actions.add_parser(
        "down", parents=[*parents, only], help="stop; no process is left running"
    )
    p_down.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds before SIGKILL"
    )
    actions.add_parser(
        "status",
        parents=[*parents, only],
        help="health of each service (exit 3 if any is not running)",
    )
    parser.set_defaults(func=run)


def _print_status(rows: list[ServiceStatus]) -> None:
    for row in rows:
        pids = ",".join(map(str, row.pids)) or "-"
        detail = f"  {row.detail}" if row.detail else ""
        where = f"{row.endpoint:<24} pid {pids:<12} logs {row.logs}"
        print(f"{row.name:<6} {row.state:<9} {where}{detail}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point of `personalize services ...`."""
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python's connection chatter
    try:
        if args.action == "up":
            started = up(settings, args.only, args.timeout)
            _print_status(status(settings, args.only))
            print(f"started: {', '.join(started) or 'nothing (all were running)'}")
            return 0
        if args.action == "down":
            killed = down(settings, args.only, args.timeout)
            _print_status(status(settings, args.only))
            if killed:
                print(f"killed after timeout: {killed}")
            return 0
        rows = status(settings, args.only)
        _print_status(rows)
        return 0 if all(r.healthy for r in rows) else 3
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
