"""The shape shared by the local services (Kafka, Redis, Flink): start, health, status, stop."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runners.services._proc import (
    ServiceError,
    alive,
    describe_port_owner,
    log_tail,
    pids_with,
    port_open,
    project_path,
    terminate,
    wait_until,
)
from transforms.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What `personalize services status` prints for one service."""

    name: str
    state: str  # running | starting | stopped | conflict
    endpoint: str
    pids: tuple[int, ...]
    logs: Path
    detail: str = ""

    @property
    def healthy(self) -> bool:
        """Whether the service answers its health check."""
        return self.state == "running"


class LocalService:
    """One service under `<state_dir>/<name>`: data, generated config, pid file, logs/.

    Subclasses say how to launch it (`launch`), how to ask it whether it is well
    (`healthy`), and what to do once it is (`after_start`, e.g. create topics).
    """

    name = ""
    start_timeout = 60.0
    port_settings = ""  # where the ports are configured, for error messages

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = project_path(settings.paths.state_dir) / self.name
        self.logs = self.home / "logs"

    # --- what subclasses provide -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Where clients connect."""
        raise NotImplementedError

    @property
    def ports(self) -> list[tuple[str, int]]:
        """The (host, port) pairs the service listens on; all must be free before a start."""
        raise NotImplementedError

    def healthy(self) -> bool:
        """Whether the service answers its health check now (quick, never raises)."""
        raise NotImplementedError

    def launch(self) -> None:
        """Prepare config and data and start the processes, without waiting for health."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Work once healthy (e.g. creating topics); nothing by default."""

    def shutdown(self, timeout: float) -> None:
        """Ask the service to stop gracefully; `stop` kills whatever is left afterwards."""

    # --- shared behaviour --------------------------------------------------------------------

    @property
    def marker(self) -> str:
        """Found on the command line of each of our processes (see runners/services/_proc.py)."""
        return str(self.home) + "/"

    def pids(self) -> list[int]:
        """Our live processes."""
        return pids_with(self.marker)

    def status(self) -> ServiceStatus:
        """Running (healthy), starting (ours but not healthy yet), conflict, or stopped."""
        pids = tuple(self.pids())
        if self.healthy():
            state, detail = "running", ""
            if not pids:
                detail = "answering, but not started from this state folder"
        elif pids:
            state, detail = "starting", f"not healthy yet; see {self.logs}"
        else:
            busy = [port for host, port in self.ports if port_open(host, port)]
            if busy:
                state, detail = "conflict", describe_port_owner(busy[0])
            else:
                state, detail = "stopped", ""
        return ServiceStatus(self.name, state, self.endpoint, pids, self.logs, detail)

    def start(self) -> bool:
        """Launch the service unless it is healthy or already starting; False if nothing to do.

        Raises ServiceError when one of its ports belongs to a process that is not ours.
        """
        if self.healthy():
            return False
        if self.pids():
            return True  # ours, still coming up (or hung: wait_ready will tell)
        for host, port in self.ports:
            if port_open(host, port):
                raise ServiceError(
                    f"{self.name}: {describe_port_owner(port)}; stop it or choose another port "
                    f"(settings: {self.port_settings})"
                )
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log.info("starting %s on %s (logs: %s)", self.name, self.endpoint, self.logs)
        self.launch()
        return True

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until healthy, then run `after_start`; ServiceError with the log's tail if the
        processes die or the time runs out."""

        def died() -> str | None:
            if self.pids():
                return None
            return (
                f"its processes exited; last lines of {self.main_log}:\n{log_tail(self.main_log)}"
            )

        try:
            wait_until(
                self.healthy,
                timeout or self.start_timeout,
                f"{self.name} on {self.endpoint}",
                failed=died,
                interval=0.5,
            )
        except ServiceError as exc:
            raise ServiceError(f"{exc}\n  logs: {self.logs}") from None
        self.after_start()

    @property
    def main_log(self) -> Path:
        """The log to quote when the service fails to come up."""
        return self.logs / f"{self.name}.log"

    def stop(self, timeout: float = 30.0) -> list[int]:
        """Stop the service and make sure none of its processes is left; returns the pids that
        had to be killed. Raises ServiceError if a process survives SIGKILL."""
        if self.pids() or self.healthy():
            try:
                self.shutdown(timeout)
            except (OSError, subprocess.SubprocessError, ServiceError) as exc:
                log.warning("%s: graceful shutdown failed (%s); terminating", self.name, exc)
        left = self.pids()
        killed = terminate(left, timeout=timeout) if left else []
        survivors = [p for p in left if alive(p)]
        if survivors:
            raise ServiceError(f"{self.name}: processes {survivors} survived SIGKILL")
        return killed
