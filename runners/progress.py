"""Progress lines and event-time pacing for the runners that stream records (generate, replay).

    Progress("replay").tick()   counts; at most one stderr line a second, and a final one
    Pacer(speed).wait(t)        sleeps so that event time t is reached at `speed` x real time
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A one-line progress report on stderr: count, rate and the caller's extra counters."""

    def __init__(self, label: str, total: int | None = None, every_s: float = 1.0,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.every_s = every_s
        self.stream = stream or sys.stderr
        # A terminal gets one line rewritten in place; a log file or pipe one line per report.
        self._tty = self.stream.isatty()
        self.count = 0
        self.started = time.monotonic()
        self._next = self.started + every_s
        self._printed = False

    def tick(self, counters: dict[str, int] | None = None) -> None:
        """Count one record; report when a second has passed since the last line."""
        self.count += 1
        if self.count & 255 == 0 and time.monotonic() >= self._next:
            self._report(counters)
            self._next = time.monotonic() + self.every_s

    def done(self, counters: dict[str, int] | None = None) -> float:
        """The final counts (only after a progress line was printed); returns elapsed seconds."""
        if self._printed:
            self._report(counters)
            if self._tty:
                self.stream.write("\n")
        return time.monotonic() - self.started

    def _report(self, counters: dict[str, int] | None) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        extra = "".join(f" {k}={v}" for k, v in (counters or {}).items())
        line = f"{self.label}: {self.count}{of} records, {self.count / elapsed:,.0f}/s{extra}"
        self.stream.write(f"\r{line}   " if self._tty else f"{line}\n")
        self.stream.flush()
        self._printed = True


class Pacer:
    """Wall-clock pacing by event time: the first time seen is now; later times arrive at
    `speed` x real time (2.0 = twice as fast). Times behind the latest seen do not wait."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._origin: tuple[int, float] | None = None

    def wait(self, event_time: int) -> None:
        """Sleep until `event_time` is due."""
        if self._origin is None:
            self._origin = (event_time, time.monotonic())
            return
        t0, wall0 = self._origin
        delay = wall0 + (event_time - t0) / 1000.0 / self.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
