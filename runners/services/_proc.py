"""Process plumbing for `runners.services`: paths, ports, pid files, spawning and stopping.

Every process the services start carries the absolute path of its state folder on its command
line (a config file, a log path). That marker is how `down` finds what is ours, and only ours,
even when a pid file is stale or missing: a pid alone can be reused by an unrelated process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServiceError(RuntimeError):
    """A service cannot be started, checked or stopped; the message says why and what to do."""


def project_path(path: str | Path) -> Path:
    """`path` made absolute: relative paths (the settings' defaults) hang off the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def host_port(address: str) -> tuple[str, int]:
    """("127.0.0.1", 9092) from "127.0.0.1:9092" (the first one if a list is given)."""
    first = address.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ServiceError(f"not a host:port address: {address!r}")
    return host, int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listener_pid(port: int) -> int | None:
    """The pid listening on TCP `port` on this machine, from /proc (None if unknown)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh, None)
            for line in fh:
                cols = line.split()
                # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    if not inodes:
        return None
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(pid_dir.name)
    return None


def cmdline(pid: int) -> str:
    """The command line of `pid` as one string ("" if it is gone)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def describe_port_owner(port: int) -> str:
    """'port 9092 in use by another process (pid 123: java ...)' for error messages."""
    pid = listener_pid(port)
    if pid is None:
        return f"port {port} in use by another process"
    return f"port {port} in use by another process (pid {pid}: {cmdline(pid)[:120]})"


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker` (never this process)."""
    found = []
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit() and int(pid_dir.name) != os.getpid():
            pid = int(pid_dir.name)
            if marker in cmdline(pid) and alive(pid):
                found.append(pid)
    return sorted(found)


def spawn(
    cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session (its own process group), stdout and stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def terminate(pids: Sequence[int], timeout: float = 20.0) -> list[int]:
    """SIGTERM `pids` (their whole process group when they lead one), SIGKILL what outlives
    `timeout`; returns the pids that were still running and got killed."""

    def signal_all(sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.2)
    stubborn = [p for p in pids if alive(p)]
    signal_all(signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in stubborn), 10.0, "killed processes to exit")
    return stubborn


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    failed: Callable[[], str | None] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll `check` until true; raise ServiceError after `timeout` seconds, or as soon as
    `failed` returns a reason (e.g. the process died)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        reason = failed() if failed else None
        if reason:
            raise ServiceError(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"    (no log at {path})"
    return "\n".join("    " + line for line in text)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path`, so concurrent `up`/`down` calls take turns."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
