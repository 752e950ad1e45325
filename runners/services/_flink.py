"""A standalone Flink cluster (one JobManager, flink.taskmanagers TaskManagers of
flink.task_slots slots each) from the PyFlink wheel's own scripts, `pyflink/bin/start-cluster.sh`,
configured from a generated folder, never by editing site-packages:

    .state/flink/conf/    config.yaml (from the settings), masters, workers, log4j files
    .state/flink/logs/    daemon logs (FLINK_LOG_DIR)
    .state/flink/pids/    the scripts' pid files (FLINK_PID_DIR)
    .state/flink/tmp/     io.tmp.dirs, web upload dir

Python jobs run with the project's virtualenv python, in thread mode (inside the TaskManager JVM).

Several TaskManagers on this host: the workers file lists `localhost` once per TaskManager, so
start-cluster.sh runs taskmanager.sh that many times. They share the conf folder; nothing
clashes because a TaskManager's RPC, data and metrics ports, like the JobManager's blob server,
are Flink's default 0 (any free port): only the REST and JobManager RPC ports are fixed
(settings), and the state folder (so the pid, log and tmp folders) is the checkout's own. The
daemons' pid file lists every instance; `stop` kills every process under the state folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runners.services._proc import PROJECT_ROOT, ServiceError, log_tail, port_open
from runners.services._service import LocalService
from transforms.settings import Settings

_JOB_ID = re.compile(r"JobID\s+([0-9a-f]{32})")
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})


def flink_home() -> Path:
    """The pyflink package folder: FLINK_HOME of the wheel (bin/, lib/, conf/, opt/)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("flink: pyflink is not installed: run runners/bootstrap.sh")
    return Path(next(iter(spec.submodule_search_locations)))


def venv_python() -> str:
    """The interpreter jobs run with: the project's .venv, else this one."""
    candidate = PROJECT_ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _root_cause(stacktrace: str, frames: int = 8) -> str:
    """The first line and the innermost "Caused by" of a Java stack trace, with a few frames."""
    lines = stacktrace.splitlines()
    causes = [i for i, line in enumerate(lines) if line.startswith("Caused by")]
    if not causes:
        return "\n".join(lines[: frames + 1])
    return "\n".join([lines[0], "...", *lines[causes[-1] : causes[-1] + frames + 1]])


# Seconds start-up may take per TaskManager after the first (each taskmanager.sh starts JVMs
# to read the configuration before the TaskManager's own).
START_PER_TASKMANAGER = 60.0
# Flink's options that fix a port a second cluster on the host would clash on: the generated
# configuration leaves them to Flink's default 0 (any free port).
RANDOM_PORTS = ("blob.server.port", "taskmanager.rpc.port", "taskmanager.data.port",
                "metrics.internal.query-service.port")


class Flink(LocalService):
    """JobManager (REST on settings.flink.jobmanager_port) and flink.taskmanagers TaskManagers."""

    name = "flink"
    start_timeout = 120.0
    port_settings = "flink.jobmanager_port, flink.rpc_port"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.host = "localhost"
        self.rest_port = settings.flink.jobmanager_port
        self.conf = self.home / "conf"
        self.taskmanagers = settings.flink.taskmanagers
        self.start_timeout = type(self).start_timeout + START_PER_TASKMANAGER * max(
            0, self.taskmanagers - 1)

    @property
    def endpoint(self) -> str:
        """The REST / web UI address."""
        return f"http://{self.host}:{self.rest_port}"

    @property
    def ports(self) -> list[tuple[str, int]]:
        """REST and JobManager RPC."""
        return [("127.0.0.1", self.rest_port), ("127.0.0.1", self.settings.flink.rpc_port)]

    @property
    def main_log(self) -> Path:
        """The JobManager's log."""
        found = sorted(self.logs.glob("flink-*-standalonesession-*.log"))
        return found[-1] if found else self.logs / "start-cluster.out"

    # --- REST ----------------------------------------------------------------------------

    def rest(self, path: str, method: str = "GET", timeout: float = 5.0) -> Any:
        """Call the JobManager's REST API; the decoded JSON answer."""
        request = urllib.request.Request(self.endpoint + path, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def healthy(self) -> bool:
        """/overview answers and reports flink.taskmanagers TaskManagers (at least one), and
        slots."""
        if not port_open("127.0.0.1", self.rest_port):
            return False
        try:
            overview = self.rest("/overview", timeout=2.0)
        except (OSError, ValueError):
            return False
        return (overview.get("taskmanagers", 0) >= max(1, self.taskmanagers)
                and overview.get("slots-total", 0) >= 1)

    def taskmanager_pids(self) -> list[int]:
        """Our TaskManager processes (the JVMs that run the jobs' operators and, in thread
        mode, their Python)."""
        found = []
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            if b"org.apache.flink.runtime.taskexecutor.TaskManagerRunner" in cmdline:
                found.append(pid)
        return sorted(found)

    # --- the cluster scripts ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of every pyflink/bin script: our conf, logs and pid folders."""
        home = flink_home()
        python = venv_python()
        env = dict(os.environ)
        env.update(
            FLINK_HOME=str(home),
            FLINK_CONF_DIR=str(self.conf),
            FLINK_LOG_DIR=str(self.logs),
            FLINK_PID_DIR=str(self.home / "pids"),
            FLINK_LIB_DIR=str(self.home / "lib"),
            FLINK_OPT_DIR=str(home / "opt"),
            FLINK_PLUGINS_DIR=str(home / "plugins"),
            FLINK_IDENT_STRING="personalize",
            PYFLINK_PYTHON=python,
            PATH=f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def _write_conf(self) -> None:
        import yaml

        home = flink_home()
        self.conf.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(home / "conf"):
            if name.startswith(("log4j", "logback")):
                shutil.copyfile(home / "conf" / name, self.conf / name)
        with open(home / "conf" / "config.yaml") as fh:
            config = _flatten(yaml.safe_load(fh) or {})
        f = self.settings.flink
        if f.taskmanagers < 1 or f.task_slots < 1:
            raise ServiceError(
                f"flink: taskmanagers ({f.taskmanagers}) and task_slots ({f.task_slots}) must "
                "be at least 1 (settings flink.taskmanagers, flink.task_slots)")
        for key in RANDOM_PORTS:  # a second cluster on this host must not clash on them
            config.pop(key, None)
        python = venv_python()
        tmp = self.home / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        config.update(
            {
                "jobmanager.bind-host": self.host,
                "jobmanager.rpc.address": self.host,
                "jobmanager.rpc.port": f.rpc_port,
                "jobmanager.memory.process.size": f.jobmanager_memory,
                "taskmanager.bind-host": self.host,
                "taskmanager.host": self.host,
                "taskmanager.numberOfTaskSlots": f.task_slots,
                "taskmanager.memory.process.size": f.taskmanager_memory,
                "parallelism.default": f.parallelism,
                "rest.address": self.host,
                "rest.bind-address": self.host,
                "rest.port": self.rest_port,
                "python.executable": python,
                "python.client.executable": python,
                "python.execution-mode": f.execution_mode,
                "restart-strategy.type": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": 3,
                "restart-strategy.fixed-delay.delay": "2 s",
                "io.tmp.dirs": str(tmp),
                "web.tmpdir": str(tmp / "web"),
            }
        )
        # Thread mode runs Python inside the TaskManager through pemja, whose native library a
        # JVM can load into one class loader only (FLINK-37727; on JDK 17 its retry fails with
        # "NoSuchFieldException: loadedLibraryNames"). Loaded per job from the job's class
        # loader, only the first Python job of a TaskManager would run. So flink-python goes on
        # the cluster's own classpath (a lib/ of links: the wheel's lib/ plus opt/flink-python)
        # and pemja's classes load parent-first, once per JVM, as in PyFlink's local mini-cluster.
        config["classloader.parent-first-patterns.additional"] = ["pemja."]
        with open(self.conf / "config.yaml", "w") as fh:
            yaml.safe_dump(config, fh, default_flow_style=False, sort_keys=True)
        self._link_lib(home)
        (self.conf / "masters").write_text(f"{self.host}:{self.rest_port}\n")
        (self.conf / "workers").write_text(f"{self.host}\n" * f.taskmanagers)

    def _link_lib(self, home: Path) -> None:
        """`.state/flink/lib`: links to the wheel's lib/*.jar and opt/flink-python-*.jar."""
        lib = self.home / "lib"
        shutil.rmtree(lib, ignore_errors=True)
        lib.mkdir(parents=True)
        for jar in [
            *sorted((home / "lib").glob("*.jar")),
            *sorted((home / "opt").glob("flink-python-*.jar")),
        ]:
            (lib / jar.name).symlink_to(jar)

    def _script(self, name: str, timeout: float | None = None) -> None:
        script = flink_home() / "bin" / name
        timeout = timeout or self.start_timeout
        out = self.logs / f"{Path(name).stem}.out"
        with open(out, "ab") as fh:
            try:
                done = subprocess.run(
                    ["bash", str(script)],
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired as exc:
                raise ServiceError(f"flink: {name} still running after {timeout:.0f}s") from exc
        if done.returncode != 0:
            raise ServiceError(f"flink: {name} exited with {done.returncode}:\n{log_tail(out)}")

    def launch(self) -> None:
        """Generate the conf folder and run start-cluster.sh (it backgrounds the JobManager and
        each TaskManager)."""
        if not shutil.which("java"):
            raise ServiceError("flink: java not found: run runners/bootstrap.sh (installs a JRE)")
        self._write_conf()
        self._script("start-cluster.sh")

    def shutdown(self, timeout: float) -> None:
        """Forget the daemons' pid files; `stop` then SIGTERMs every daemon at once.

        That is all stop-cluster.sh does (`kill`, then `kill -9` after 10 s, one daemon after
        the other), but the script starts about six JVMs just to read the configuration:
        30-60 s on two busy cores, against a few seconds for the signals.
        """
        shutil.rmtree(self.home / "pids", ignore_errors=True)

    # --- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        py_file: str | Path,
        args: Sequence[str] = (),
        py_files: Sequence[str | Path] = (),
        jars: Sequence[str | Path] = (),
        detached: bool = True,
        timeout: float = 300.0,
    ) -> str:
        """`flink run -py FILE` against this cluster; the job id.

        Detached (the default), it returns once the job is submitted; attached, once it ends.
        """
        cmd = [str(flink_home() / "bin" / "flink"), "run"]
        if detached:
            cmd.append("--detached")
        cmd += ["--python", str(Path(py_file).resolve())]
        if py_files:
            cmd += ["--pyFiles", ",".join(str(Path(p).resolve()) for p in py_files)]
        for jar in jars:
            cmd += ["--jarfile", str(Path(jar).resolve())]
        cmd += list(args)
        try:
            done = subprocess.run(
                cmd,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                cwd=PROJECT_ROOT,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(
                f"flink run timed out after {timeout:.0f}s: {' '.join(cmd)}"
            ) from exc
        found = _JOB_ID.search(done.stdout + done.stderr)
        if done.returncode != 0 or not found:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
            raise ServiceError(
                f"flink run failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}"
            )
        return found.group(1)

    def jobs(self) -> list[dict[str, Any]]:
        """Jobs the cluster knows: dicts with jid, name, state, start-time, ..."""
        return list(self.rest("/jobs/overview").get("jobs", []))

    def cancel(self, job_id: str) -> None:
        """Cancel a job (no-op if it already ended)."""
        try:
            self.rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 409):  # unknown, or already in a terminal state
                raise ServiceError(f"flink: cancelling {job_id}: {exc}") from exc

    def job_exception(self, job_id: str) -> str:
        """The job's latest failure as a stack trace ("" if none)."""
        answer = self.rest(f"/jobs/{job_id}/exceptions")
        entries = answer.get("exceptionHistory", {}).get("entries", [])
        if entries:
            return str(entries[0].get("stacktrace", ""))
        return str(answer.get("root-exception", ""))

    def wait_job(
        self, job_id: str, timeout: float = 120.0, until: frozenset[str] = TERMINAL_STATES
    ) -> str:
        """Wait until the job is in one of `until` (default: it ended); its state. A job that
        FAILED raises ServiceError with the root cause, whatever `until` says."""
        deadline = time.monotonic() + timeout
        while True:
            state = str(self.rest(f"/jobs/{job_id}")["state"])
            if state == "FAILED":
                cause = self.job_exception(job_id)
                raise ServiceError(f"flink job {job_id} FAILED:\n{_root_cause(cause)}")
            if state in until or state in TERMINAL_STATES:
                return state
            if time.monotonic() >= deadline:
                raise ServiceError(f"flink job {job_id} still {state} after {timeout:.0f}s")
            time.sleep(0.5)
