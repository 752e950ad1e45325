"""Kafka in and out of the Beam topology on the Python DirectRunner (kafka-python, no Java).

    KafkaSource(settings, options, local)   a consumer behind a local TestStream service
      .read() -> ReadFromKafka              PBegin -> {EVENTS, PROFILES: PCollection of
                                            (KafkaRecord, watermark, now, batch)}
    WriteToKafka(local, kafka, topic, encode, counter)   records -> topic (kafka: settings.kafka)

Why a TestStream service, and what was tried
--------------------------------------------
Streaming on the Python DirectRunner means the BundleBasedDirectRunner (the FnApiRunner, used
for batch, does not stream). Its unbounded inputs are TestStream, PubSub and splittable DoFns:

1. A splittable DoFn over kafka-python (OffsetRange restriction, ManualWatermarkEstimator set
   to record time - max_out_of_orderness, defer_remainder between polls). It reads, but the
   runner does not honour the estimator: in a probe (Beam 2.61, streaming) an event-time timer
   set 100 000 s after an element the SDF had just emitted fired at once, while the SDF still
   had its remainder to read. Downstream of it event time has already ended: every deadline
   would fire as soon as it is set, before the events that cancel it arrive.
2. The cross-language ReadFromKafka needs a Java expansion service and a portable runner
   (Flink, Prism, or Docker for the Java SDK harness), none of which is this runner.
3. Micro-batches (bounded pipelines one after another) lose Beam's keyed state and timers
   between batches; state would have to live outside Beam.
4. TestStream with an `endpoint`: the DirectRunner pulls TestStream events one at a time from
   a gRPC TestStreamService (the mechanism Interactive Beam streams with) and makes each a
   bundle; ElementEvents carry elements with their event timestamps, WatermarkEvents set the
   watermark, and the end of the stream takes it to +inf. Served from a live consumer, that is
   a continuous unbounded read whose watermark moves with the data. This is what is used: the
   KafkaReader runs on the service's thread, the pipeline pulls batches from it.

The clock is transforms/clock.py's (the rule of every runner), over the partitions of both
topics, with `flink.idleness`: each poll becomes one ElementEvent per topic, each element
being (KafkaRecord, the watermark of its own partition just before it, the wall clock when it
was read), then a WatermarkEvent with the combined watermark. The topology judges lateness
against the element's partition watermark, so it decides as the reference does. A partition
with records left (end offsets, asked of the broker) holds the combined watermark past
idleness, so a backlog fetched after another partition's is not overtaken by timers.
An unbounded read with every partition idle lets the combined watermark follow the wall clock
(the clock's follow_wall_clock), so a cart-abandonment deadline fires about when it is due
rather than at the next event. Bounded reads (--max-events, --until-idle: replays, tests,
benchmarks, often of old data) do not; their end takes the watermark to +inf and every pending
deadline fires at its own time. An idle read sends a heartbeat (the same watermark) every
second: the runner gives up on a service silent for 30 s.

Back-pressure: a pass-through step (Acknowledge) right after the TestStream counts the records
that entered the pipeline; the reader keeps at most `max_in_flight` records between itself and
that step. Offsets: a sink error never commits input offsets past unwritten outputs. The Flow
counts the records the topology hands to its sinks (`emit`) and those the sinks have written
(`written`: a Kafka sink after its bundle's flush succeeded); at each instant when the two are
equal, the offsets of the batches through the keyed step are safe, since every output they
caused so far is on the broker. The reader commits the latest safe offsets every
`commit_every` seconds, and the job commits them once more when the pipeline has finished
(`KafkaReader.commit_final`: after the deadlines the end of the read fired are written too).
A failed sink bundle leaves emit ahead of written until a retry succeeds (a retry skips what
the failed attempt delivered, so nothing is written twice); if the retries fail, the job fails
with nothing committed past it. Known limit: the DirectRunner
keeps keyed state and timers in memory and never checkpoints them, so a restarted job resumes
at the committed offsets but has lost what was buffered and the pending deadlines. A Ctrl-C
therefore ends the read like a bounded one: everything read is processed and every pending
deadline fires, at its own time, before the job exits. Exactly-once across restarts is the
Flink runner's (checkpoints).

Sinks share one producer per run and flush it at the end of every bundle, so a bundle's
outputs are on the broker before the runner moves on; a failed send fails the bundle, which the
runner retries (skipping what was delivered) and, after its last retry, fails the pipeline.
Outputs are bounded below the broker's max.message.bytes by the core (transforms/sizes.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import apache_beam as beam
import grpc
from apache_beam.coders import PickleCoder
from apache_beam.portability.api import beam_runner_api_pb2 as api
from apache_beam.portability.api import beam_runner_api_pb2_grpc as api_grpc
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from pipelines.connections import kafka_client_config
from pipelines.wire import EVENTS, PROFILES, event_time_of
from transforms.clock import EventClock, receipt
from transforms.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
END_OFFSETS_EVERY = 1.0     # seconds between end-offset queries of the partitions being read
POLL_MS = 200
# A record with no readable event time is stamped with the watermark (or this, before any).
_MIN_MICROS = MIN_TIMESTAMP.micros


class KafkaRecord(NamedTuple):
    """One consumed record: where it came from, its value, and when it was read (epoch ms)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    received_at: int


# ------------------------------------------------------------------------------ process-local


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


# ------------------------------------------------------------------------------ the reader


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ReadOptions:
    """How a read runs: bounded by a record count and/or an idle time, or unbounded."""

    max_events: int | None = None        # stop after this many records (both topics)
    until_idle: float | None = None      # stop when nothing came for this many seconds
    from_beginning: bool = False         # earliest offset when the group has none committed
    max_in_flight: int = 20_000          # records read but not yet in the pipeline
    max_poll_records: int = 2_000
    commit_every: float = 5.0            # seconds between offset commits
    progress_every: float | None = None  # seconds between progress reports (None: none)
    stop: threading.Event | None = None  # set it to end an unbounded read (then as bounded)

    @property
    def bounded(self) -> bool:
        """Whether the read ends by itself."""
        return self.max_events is not None or self.until_idle is not None


@dataclass(slots=True)
class Batch:
    """One poll: per tag, (record, its partition's watermark before it, wall clock at receipt,
    batch number, event time); then the combined watermark."""

    elements: dict[str, list[tuple[KafkaRecord, int | None, int, int, int | None]]]
    watermark: int | None


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
    are committable (the module docstring says why).
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


class KafkaReader:
    """Polls the events and profiles topics and yields Batches with the source watermark."""

    def __init__(
        self, settings: Settings, options: ReadOptions, flow: Flow,
        topics: dict[str, str] | None = None, group_id: str | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        k = settings.kafka
        self.kafka = k
        self.tags = {topic: tag for tag, topic in (topics or {
            EVENTS: k.events_topic, PROFILES: k.profiles_topic}).items()}
        self.group_id = group_id or k.group_id
        self.core = settings.core
        self.options = options
        self.flow = flow
        self.clock = EventClock(settings.core, settings.flink.idleness,
                                follow_wall_clock=not options.bounded)
        self.report = report
        self.read = 0
        self._ends: dict[Any, int] = {}
        self._ends_at = 0.0
        self.error: Exception | None = None
        self.first_record_at: float | None = None     # time.monotonic() of the first record
        self.stop_requested = False
        self.started = time.monotonic()
        self._last_stats = (self.started, 0)
        self.committed: dict[tuple[str, int], int] = {}

    def batches(self) -> Iterator[Batch]:
        """Poll until the bounds are reached (or forever), committing what is committable."""
        from kafka import KafkaConsumer

        opts = self.options
        consumer = KafkaConsumer(
            *self.tags, **kafka_client_config(self.kafka), group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if opts.from_beginning else "latest",
            max_poll_records=opts.max_poll_records, client_id=f"personalize-beam-{self.group_id}",
        )
        committed = self.committed
        try:
            last_data = last_beat = last_commit = last_report = time.monotonic()
            while not self.stop_requested:
                if opts.max_events is not None and self.read >= opts.max_events:
                    break
                if opts.stop is not None and opts.stop.is_set():
                    break
                while self.flow.in_flight() > opts.max_in_flight and not self.stop_requested:
                    time.sleep(0.01)
                polled = consumer.poll(timeout_ms=POLL_MS, max_records=self._room())
                now = time.monotonic()
                if not consumer.assignment():
                    last_data = now                 # the idle clock starts once assigned
                if polled:
                    last_data = last_beat = now
                    if self.first_record_at is None:
                        self.first_record_at = now
                    yield self._batch(consumer, polled)
                else:
                    if consumer.assignment():
                        self._track(consumer)
                    if opts.until_idle is not None and now - last_data >= opts.until_idle:
                        break
                    self.clock.tick(wall_ms())
                    if now - last_beat >= HEARTBEAT_S:
                        last_beat = now
                        yield self._heartbeat()
                if now - last_commit >= opts.commit_every:
                    last_commit = now
                    self._commit(consumer, committed)
                if opts.progress_every is not None and now - last_report >= opts.progress_every:
                    last_report = now
                    self._report()
            self.flow.end()
        finally:
            consumer.close(autocommit=False)
            self._report()

    def stats(self) -> dict[str, Any]:
        """Records read, the read rate since the previous call, watermark, records in flight."""
        now = time.monotonic()
        since, read_then = self._last_stats
        self._last_stats = (now, self.read)
        rate = (self.read - read_then) / max(now - since, 1e-9)
        return {"read": self.read, "per_s": round(rate),
                "watermark": self.clock.watermark, "in_flight": self.flow.in_flight()}

    def _room(self) -> int:
        room = self.options.max_poll_records
        if self.options.max_events is not None:
            room = min(room, self.options.max_events - self.read)
        return max(room, 1)

    def _track(self, consumer: Any) -> None:
        """Tell the clock the assigned partitions, where their reads stand and end.

        The end offsets are asked of the broker (at most every END_OFFSETS_EVERY seconds, and
        whenever a partition has read past what is known): the consumer's own highwater is only
        known once it has fetched a partition, and it fetches them one after another when
        catching up, so an unfetched partition with a backlog would look empty and stop holding
        the watermark while its records are still to come.
        """
        assigned = consumer.assignment()
        now = time.monotonic()
        positions = {tp: consumer.position(tp) for tp in assigned}
        stale = now - self._ends_at >= END_OFFSETS_EVERY
        if stale or any(tp not in self._ends or positions[tp] > self._ends[tp] for tp in assigned):
            self._ends = dict(consumer.end_offsets(list(assigned)))
            self._ends_at = now
        clock = self.clock
        keys = [(tp.topic, tp.partition) for tp in assigned]
        clock.expect(keys, wall_ms(), start={(tp.topic, tp.partition): positions[tp]
                                             for tp in assigned})
        clock.set_ends({(tp.topic, tp.partition): self._ends[tp] for tp in assigned})

    def _batch(self, consumer: Any, polled: dict[Any, list[Any]]) -> Batch:
        clock = self.clock
        core = self.core
        number = self.flow.open_batch()
        self._track(consumer)
        elements: dict[str, list[tuple[KafkaRecord, int | None, int, int, int | None]]] = {}
        read_at = wall_ms()
        n = 0
        offsets: dict[tuple[str, int], int] = {}
        for tp, records in polled.items():
            tag = self.tags[tp.topic]
            key = (tp.topic, tp.partition)
            out = elements.setdefault(tag, [])
            if records:
                offsets[key] = records[-1].offset
            for r in records:
                value = r.value if r.value is not None else b""
                t = event_time_of(tag, value, core)
                received = receipt(r.timestamp, read_at)
                out.append((KafkaRecord(r.topic, r.partition, r.offset, value, received),
                            clock.partition_watermark(key), received, number, t))
                clock.observe(key, t, read_at, r.offset, received)
            n += len(records)
        self.read += n
        self.flow.close_batch(number, n, clock.watermark, offsets)
        return Batch(elements, clock.watermark)

    def _heartbeat(self) -> Batch:
        """No records: the watermark again (or an idle source's new one), as an empty batch."""
        self.flow.close_batch(self.flow.open_batch(), 0, self.clock.watermark)
        return Batch({}, self.clock.watermark)

    def commit_final(self) -> None:
        """Once the pipeline has finished without error: commit the offsets that are
        committable (all that was read, when every output was written)."""
        from kafka import KafkaConsumer

        if not self.flow.settled():
            log.warning("outputs left unwritten: offsets committed only up to the last "
                        "point where every output was written")
        consumer = KafkaConsumer(**kafka_client_config(self.kafka), group_id=self.group_id,
                                 enable_auto_commit=False,
                                 client_id=f"personalize-beam-{self.group_id}")
        try:
            self._commit(consumer, self.committed)
        finally:
            consumer.close(autocommit=False)

    def _commit(self, consumer: Any, committed: dict[tuple[str, int], int]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        with self.flow.lock:
            safe = dict(self.flow.committable)
        todo = {tp: off for tp, off in safe.items() if committed.get(tp) != off}
        if todo:
            consumer.commit({TopicPartition(t, p): OffsetAndMetadata(off + 1, "", -1)
                             for (t, p), off in todo.items()})
            committed.update(todo)

    def _report(self) -> None:
        if self.report is not None:
            self.report(self.stats())


# ------------------------------------------------------------------------------ the service


class _Service(api_grpc.TestStreamServiceServicer):
    """Serves the reader's batches as TestStream events (one request: the pipeline's)."""

    def __init__(self, reader: KafkaReader, coder: PickleCoder) -> None:
        self.reader = reader
        self.coder = coder

    def Events(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802 (gRPC name)
        """The event stream. A failure of the reader (Kafka, commits) ends it: what was read
        is processed, and the job raises the reader's error once the pipeline is done, rather
        than the runner giving up on a silent service 30 s later with no cause."""
        try:
            yield from self._events(request, context)
        except Exception as exc:  # noqa: BLE001 - re-raised by the job (KafkaSource.raise_error)
            self.reader.error = exc

    def _events(self, request: Any, context: Any) -> Iterator[Any]:
        """Per batch, elements per tag, then the watermark of every tag."""
        tags = [t for t in request.output_ids if t in (EVENTS, PROFILES)]
        encode = self.coder.encode
        event = api.TestStreamPayload.Event
        element = api.TestStreamPayload.TimestampedElement
        sent_wm: int | None = None
        for batch in self.reader.batches():
            if not context.is_active():
                self.reader.stop_requested = True
                return
            for tag, rows in batch.elements.items():
                yield event(element_event=event.AddElements(tag=tag, elements=[
                    element(encoded_element=encode((record, wm, now, number)),
                            timestamp=_stamp(t if t is not None and (wm is None or t > wm) else wm))
                    for record, wm, now, number, t in rows
                ]))
            wm = batch.watermark
            if batch.elements and (wm is None or (sent_wm is not None and wm <= sent_wm)):
                continue
            # A new watermark, or a heartbeat repeating the last one (or -inf before any).
            sent_wm = wm
            micros = _MIN_MICROS if wm is None else wm * 1000
            for tag in tags:
                yield event(watermark_event=event.AdvanceWatermark(tag=tag, new_watermark=micros))


def _stamp(ms: int | None) -> int:
    return _MIN_MICROS if ms is None else ms * 1000


class KafkaSource:
    """The Kafka read of one pipeline run: a reader behind a local TestStream service.

    Use as a context manager around building and running the pipeline:

        with KafkaSource(settings, options, local) as source:
            streams = p | "ReadKafka" >> source.read()
    """

    def __init__(
        self, settings: Settings, options: ReadOptions, local: Local,
        topics: dict[str, str] | None = None, group_id: str | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.local = local
        self.flow: Flow = local.get("flow", Flow)
        self.reader = KafkaReader(settings, options, self.flow, topics, group_id, report)
        self.coder = PickleCoder()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=2))
        api_grpc.add_TestStreamServiceServicer_to_server(
            _Service(self.reader, self.coder), self._server)
        self.endpoint = f"localhost:{self._server.add_insecure_port('localhost:0')}"

    def __enter__(self) -> KafkaSource:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.stop_requested = True
        self._server.stop(grace=None)

    def raise_error(self) -> None:
        """Raise what ended the read early, if anything did."""
        if self.reader.error is not None:
            raise RuntimeError(f"Kafka read failed: {self.reader.error!r}") from self.reader.error

    def read(self) -> ReadFromKafka:
        """The PTransform reading through this source."""
        return ReadFromKafka(self.endpoint, self.coder, self.local)


class ReadFromKafka(beam.PTransform):
    """PBegin -> {EVENTS, PROFILES: PCollection of (KafkaRecord, watermark, now, batch)}: the
    watermark of the record's partition when the source read it (None before any), the wall
    clock then, and the number of the batch it came in (Flow).
    """

    def __init__(self, endpoint: str, coder: PickleCoder, local: Local) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.coder = coder
        self.local = local

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        """The TestStream and one Acknowledge step per topic."""
        streams = pbegin | "Poll" >> TestStream(
            coder=self.coder, output_tags=[EVENTS, PROFILES], endpoint=self.endpoint)
        return {
            tag: streams[tag] | f"Acknowledge{tag.title()}" >> beam.ParDo(_Acknowledge(self.local))
            for tag in (EVENTS, PROFILES)
        }


class _Acknowledge(beam.DoFn):
    """Pass-through that tells the reader which records entered the pipeline."""

    def __init__(self, local: Local) -> None:
        self.local = local

    def start_bundle(self) -> None:
        self.n = 0

    def process(self, element: tuple[KafkaRecord, int | None, int | None, int]) -> Iterator[Any]:
        self.n += 1
        yield element

    def finish_bundle(self) -> None:
        if self.n:
            flow: Flow = self.local.get("flow", Flow)
            flow.ack(self.n)


# ------------------------------------------------------------------------------ the sink


Encoded = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class WriteToKafka(beam.PTransform):
    """PCollection of records -> `topic`, each encoded by `encode` to (key, value[, headers]);
    `counter`: the output kind, which it reports written to the run's Flow."""

    def __init__(self, local: Local, kafka: KafkaSettings, topic: str,
                 encode: Callable[[Any], Encoded], counter: str) -> None:
        super().__init__()
        local.get("flow", Flow).reporting.add(counter)
        self.fn = _Produce(local, kafka, topic, encode, counter)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        """One ParDo producing to the topic."""
        return records | "Produce" >> beam.ParDo(self.fn)


Record = tuple[str, bytes | None, bytes, tuple[tuple[str, bytes], ...]]


class Producer:
    """A kafka-python producer shared by the sinks of a run.

    It remembers the records a failed bundle did deliver (`delivered`), so that the runner's
    retry of that bundle skips them (`already_sent`): a retry writes nothing twice.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        from runners.kafka_io import open_producer

        self.producer = open_producer(kafka)
        self.lock = threading.Lock()
        self.delivered: dict[Record, int] = {}

    def send(self, record: Record) -> Any:
        """Queue one record (topic, key, value, headers); its future."""
        topic, key, value, headers = record
        return self.producer.send(topic, value=value, key=key, headers=list(headers) or None)

    def already_sent(self, record: Record) -> bool:
        """Whether `record` was delivered by a failed attempt of the bundle now retried (then it
        is taken off the list)."""
        if not self.delivered:
            return False
        with self.lock:
            n = self.delivered.get(record, 0)
            if not n:
                return False
            if n == 1:
                del self.delivered[record]
            else:
                self.delivered[record] = n - 1
            return True

    def flush(self, sent: list[tuple[Record, Any]]) -> None:
        """Wait until everything queued is on the broker; if some of `sent` ((record, its
        future, or None: delivered by an earlier attempt)) failed, remember the others as
        delivered and raise (the runner retries the bundle)."""
        from kafka.errors import KafkaError

        with contextlib.suppress(KafkaError):
            self.producer.flush()
        # kafka-python's flush can return (or give up) before the records of a batch it split
        # are done: wait for each (a future ends within the producer's delivery_timeout_ms).
        for _, future in sent:
            if future is not None and not future.is_done:
                with contextlib.suppress(KafkaError):
                    future.get()
        failed = [f.exception for _, f in sent if f is not None and not f.succeeded()]
        if failed:
            with self.lock:
                for record, future in sent:
                    if future is None or future.succeeded():
                        self.delivered[record] = self.delivered.get(record, 0) + 1
            raise RuntimeError(f"{len(failed)} Kafka sends failed, first: {failed[0]!r}")

    def close(self) -> None:
        """Flush and close."""
        self.producer.flush()
        self.producer.close()


class _Produce(beam.DoFn):
    def __init__(self, local: Local, kafka: KafkaSettings, topic: str,
                 encode: Callable[[Any], Encoded], counter: str) -> None:
        self.local = local
        self.kafka = kafka
        self.topic = topic
        self.encode = encode
        self.counter = counter

    def setup(self) -> None:
        self.producer: Producer = self.local.get(f"producer:{self.kafka.bootstrap}",
                                                 lambda: Producer(self.kafka))

    def start_bundle(self) -> None:
        self.n = 0
        self.sent: list[tuple[Record, Any]] = []

    def process(self, record: Any) -> Iterator[Any]:
        encoded = self.encode(record)
        headers = tuple(encoded[2]) if len(encoded) > 2 else ()
        out: Record = (self.topic, encoded[0], encoded[1], headers)
        self.n += 1
        delivered = self.producer.already_sent(out)
        self.sent.append((out, None if delivered else self.producer.send(out)))
        return iter(())

    def finish_bundle(self) -> None:
        if self.n:
            self.producer.flush(self.sent)
            self.local.get("flow", Flow).written(self.n)
            tally(self.local).add({self.counter: self.n})


def print_progress(stats: dict[str, Any]) -> None:
    """A progress line on stderr (the reader's report callback of `personalize run`)."""
    sys.stderr.write("\rdirect: " + " ".join(f"{k}={v}" for k, v in stats.items()) + "   ")
    sys.stderr.flush()
