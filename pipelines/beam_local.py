"""What one Beam run shares between its stages, in this process (the DirectRunner's).

    Local        a run's shared objects (the core, a producer, collectors), by run id
    Tally        thread-safe counters of the run (records per sink, dropped by reason)
    Flow         records in flight: batches through the source, the keyed step and the sinks;
                 the safe watermark and the committable offsets follow from it
    KafkaRecord  one consumed record, as the source hands it to the decoders

Why the safe watermark and committable offsets are what they are: docs/beam-topology.md.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple


class KafkaRecord(NamedTuple):
    """One consumed record: where it came from, its value, and when it was read (epoch ms)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    received_at: int


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Local:
    """Objects one pipeline run shares between its DoFn copies, in this process, by run id.

    The DirectRunner in streaming mode unpickles a fresh copy of each DoFn for every bundle and
    tears it down after it, so a Kafka producer, the core (its Jinja environment does not
    pickle) or an output collector cannot live in a DoFn: the DoFn holds this handle (an id) and
    fetches them here. This ties the topology to in-process runners, which the DirectRunner is.
    """

    _objects: ClassVar[dict[str, dict[str, Any]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex

    def get(self, name: str, make: Callable[[], Any] | None = None) -> Any:
        """The object called `name` of this run, made by `make` on first use."""
        with Local._lock:
            objects = Local._objects.setdefault(self.id, {})
            if name not in objects:
                if make is None:
                    raise KeyError(f"{name} was not registered for this pipeline run")
                objects[name] = make()
            return objects[name]

    def put(self, name: str, obj: Any) -> None:
        """Register `obj` under `name` for this run."""
        with Local._lock:
            Local._objects.setdefault(self.id, {})[name] = obj

    def close(self) -> None:
        """Forget this run's objects, closing those that can be closed."""
        with Local._lock:
            objects = Local._objects.pop(self.id, {})
        for obj in objects.values():
            close = getattr(obj, "close", None)
            if callable(close):
                close()


class Tally:
    """Thread-safe counters of one run (records per sink, dropped by reason, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, counts: dict[str, int]) -> None:
        """Add a DoFn's bundle counts."""
        with self._lock:
            for name, n in counts.items():
                self.counts[name] = self.counts.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self.counts)


def tally(local: Local) -> Tally:
    """The run's counters."""
    t: Tally = local.get("tally", Tally)
    return t


@dataclass(slots=True)
class Flow:
    """Records in flight through a run (thread-safe).

    The source hands records over in batches (`open_batch` / `close_batch`: how many, the
    watermark it announces after them, the highest offset per partition in them); the topology
    reports, per batch, how many it decoded, routed to the keyed step and stepped there (`add`).
    From that, `safe_watermark` is the last announced watermark all of whose batches are through
    the keyed step: no record that is not late can reach a customer's state at or before it any
    more. The Acknowledge step counts what entered the pipeline (back-pressure).

    Offsets to commit (`committable`): the topology counts the outputs it hands to sinks that
    report writes (`emit`, before the `add` of the batches that caused them; `reporting`: the
    kinds of those sinks, registered when they are built), those sinks count what they wrote
    (`written`); whenever the two are equal, the offsets of the batches through the keyed step
    are committable (docs/beam-topology.md says why).
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    ended: bool = False
    acked: int = 0
    reporting: set[str] = field(default_factory=set)
    emitted: int = 0
    stored: int = 0
    # Highest offset per partition of the batches through the keyed step, and of those when
    # everything emitted was last written.
    done: dict[tuple[str, int], int] = field(default_factory=dict)
    committable: dict[tuple[str, int], int] = field(default_factory=dict)
    # Per batch: [records, watermark after it, decoded, routed, stepped, offsets]; size -1 =
    # still open.
    batches: list[list[Any]] = field(default_factory=list)
    _complete: int = 0                 # how many leading batches are through the keyed step
    _safe: int | None = None

    def open_batch(self) -> int:
        """A new batch's number (the source's thread only)."""
        with self.lock:
            self.batches.append([-1, None, 0, 0, 0, None])
            return len(self.batches) - 1

    def close_batch(self, batch: int, size: int, watermark: int | None,
                    offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Batch `batch` holds `size` records (highest offset per partition: `offsets`); the
        source's watermark after it."""
        with self.lock:
            self.batches[batch][0] = size
            self.batches[batch][1] = watermark
            self.batches[batch][5] = offsets
            self.sent += size

    def add(self, batch: int, decoded: int = 0, routed: int = 0, stepped: int = 0) -> None:
        """A bundle's progress in the topology with records of `batch`."""
        with self.lock:
            counts = self.batches[batch]
            counts[2] += decoded
            counts[3] += routed
            counts[4] += stepped
            self._settle()

    def emit(self, n: int) -> None:
        """A bundle handed n records to the sinks that report `written` (before its `add`)."""
        with self.lock:
            self.emitted += n

    def written(self, n: int) -> None:
        """A sink has n more records on the broker (or in the store)."""
        with self.lock:
            self.stored += n
            self._settle()

    def _settle(self) -> None:
        """With the lock held: when every output emitted is written, the offsets of the batches
        through the keyed step become committable."""
        if self.stored == self.emitted:
            self._advance()
            if self.committable != self.done:
                self.committable = dict(self.done)

    def _advance(self) -> None:
        """With the lock held: count the leading batches now through the keyed step."""
        batches = self.batches
        while self._complete < len(batches):
            size, watermark, decoded, routed, stepped, offsets = batches[self._complete]
            if size < 0 or decoded < size or stepped < routed:
                break
            self._complete += 1
            if watermark is not None and (self._safe is None or watermark > self._safe):
                self._safe = watermark
            for tp, offset in (offsets or {}).items():
                if offset > self.done.get(tp, -1):
                    self.done[tp] = offset

    def settled(self) -> bool:
        """Whether every batch is through the keyed step and every output written."""
        with self.lock:
            self._settle()
            return self._complete == len(self.batches) and self.stored == self.emitted

    def end(self) -> None:
        """The source will send nothing more."""
        with self.lock:
            self.ended = True

    def safe_watermark(self) -> int | None:
        """The latest watermark the keyed step may treat as passed (see the class docstring)."""
        with self.lock:
            self._advance()
            return self._safe

    def drained(self) -> bool:
        """Whether the input has ended and every record of it has been through the keyed step
        (or dead-lettered before it): nothing can reach the keyed state any more."""
        self.safe_watermark()
        with self.lock:
            return self.ended and self._complete == len(self.batches)

    def ack(self, n: int) -> None:
        """A bundle of n records entered the pipeline."""
        with self.lock:
            self.acked += n

    def in_flight(self) -> int:
        """Records sent but not acknowledged."""
        with self.lock:
            return self.sent - self.acked


def flow(local: Local) -> Flow:
    """The run's Flow (beam_kafka): records through the source and the topology."""
    f: Flow = local.get("flow", Flow)
    return f
