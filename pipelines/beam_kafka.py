"""Kafka in and out of the Beam topology on the Python DirectRunner (kafka-python, no Java).

    run_kafka_job(settings, options, feature_writer, ...) -> summary   the topology over Kafka
                                            until the read ends (`personalize run --runner direct`)
    KafkaSource(settings, options, local)   a consumer behind a local TestStream service
      .read() -> ReadFromKafka              PBegin -> {EVENTS, PROFILES: PCollection of
                                            (KafkaRecord, watermark, now, batch)}

The source is a TestStream served from a live consumer (the only unbounded input of the
streaming DirectRunner that honours event time; what was tried: docs/beam-topology.md). Each
poll becomes one ElementEvent per topic, each element (KafkaRecord, the watermark of its own
partition just before it, the wall clock when read, batch), then a WatermarkEvent with the
combined watermark of transforms/clock.py (with `flink.idleness`). Bounded reads
(--max-events, --until-idle) end by taking the watermark to +inf: every pending deadline fires
at its own time. At most `max_in_flight` records are between the reader and the pipeline.
Offsets are committed only when every output they caused is on the broker (the run's Flow,
pipelines/beam_local.py). Known limit: keyed state and timers are in memory, never
checkpointed; a Ctrl-C ends the read like a bounded one. Sinks: pipelines/beam_sinks.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import grpc
from apache_beam.coders import PickleCoder
from apache_beam.portability.api import beam_runner_api_pb2 as api
from apache_beam.portability.api import beam_runner_api_pb2_grpc as api_grpc
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from pipelines.beam_local import Flow, KafkaRecord, Local, tally, wall_ms
from pipelines.beam_pipeline import DROPPED_PREFIX, build_pipeline, run_to_end, streaming_options
from pipelines.beam_sinks import CountFeatures, FeatureWriter, kafka_sinks
from pipelines.common import changes_topic
from pipelines.connections import kafka_client_config
from pipelines.wire import CHANGES, EVENTS, PROFILES, event_time_of
from transforms.clock import EventClock, receipt
from transforms.core import Core
from transforms.model import AUDIT, DEAD_LETTER, FEATURES, OUTCOME, PAYLOAD
from transforms.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

# create_topics(kafka settings, topic names, partitions)
CreateTopics = Callable[[KafkaSettings, list[str], int], object]

HEARTBEAT_S = 1.0
END_OFFSETS_EVERY = 1.0     # seconds between end-offset queries of the partitions being read
POLL_MS = 200
# A record with no readable event time is stamped with the watermark (or this, before any).
_MIN_MICROS = MIN_TIMESTAMP.micros


# ------------------------------------------------------------------------------ the reader


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
        tags = [t for t in request.output_ids if t in (EVENTS, PROFILES, CHANGES)]
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
            coder=self.coder, output_tags=[EVENTS, PROFILES, CHANGES], endpoint=self.endpoint)
        return {
            tag: streams[tag] | f"Acknowledge{_title(tag)}" >> beam.ParDo(_Acknowledge(self.local))
            for tag in (EVENTS, PROFILES, CHANGES)
        }


def _title(tag: str) -> str:
    """A tag as a step name: events -> Events, catalog_changes -> CatalogChanges."""
    return tag.title().replace("_", "")


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


def print_progress(stats: dict[str, Any]) -> None:
    """A progress line on stderr (the reader's report callback of `personalize run`)."""
    sys.stderr.write("\rdirect: " + " ".join(f"{k}={v}" for k, v in stats.items()) + "   ")
    sys.stderr.flush()


# ------------------------------------------------------------------------------ the job


def read_options(options: argparse.Namespace | None) -> ReadOptions:
    """The bounds of `personalize run` (--max-events, --until-idle, --from-beginning)."""
    return ReadOptions(max_events=getattr(options, "max_events", None),
                       until_idle=getattr(options, "until_idle", None),
                       from_beginning=bool(getattr(options, "from_beginning", False)))


def run_kafka_job(
    settings: Settings, options: argparse.Namespace | ReadOptions | None = None,
    feature_writer: FeatureWriter | None = None, progress: bool = False,
    topics: dict[str, str] | None = None, group_id: str | None = None,
    sinks: Mapping[str, beam.PTransform] | None = None, local: Local | None = None,
    core: Core | None = None, create_topics: CreateTopics | None = None,
) -> dict[str, Any]:
    """Run the topology over Kafka until the read ends; the counts per sink.

    `topics` ({EVENTS: name, PROFILES: name}), `group_id` and `sinks` override the settings'
    input topics, consumer group and Kafka sinks (tests, the benchmark). `create_topics(kafka,
    names, partitions)`, if given, creates the topics the job reads and writes first (the
    runner's Kafka admin: runners.services.ensure_topics)."""
    read = options if isinstance(options, ReadOptions) else read_options(options)
    if progress:
        read.progress_every = 1.0
    k = settings.kafka
    local = local or Local()
    writer = feature_writer or CountFeatures()
    local.put("features", (writer, threading.Lock()))
    names = topics or {EVENTS: k.events_topic, PROFILES: k.profiles_topic}
    changes = changes_topic(settings)
    if topics is None and changes is not None and _topic_exists(k, changes):
        names[CHANGES] = changes   # the product stage (beam_products.py)
    if create_topics is not None:
        create_topics(k, [*names.values(), k.payloads_topic, k.audit_topic,
                          k.dead_letters_topic, k.outcomes_topic], k.partitions)
    read.stop = read.stop or threading.Event()
    started = time.monotonic()
    try:
        report = print_progress if progress else None
        with KafkaSource(settings, read, local, names, group_id, report) as source:
            p = beam.Pipeline(options=streaming_options())
            inputs = p | "ReadKafka" >> source.read()
            build_pipeline(p, inputs[EVENTS], inputs[PROFILES],
                           sinks or kafka_sinks(local, settings), settings, core, local,
                           inputs[CHANGES] if CHANGES in names else None)
            _run_interruptibly(p, read.stop)
            source.raise_error()
            source.reader.commit_final()
            stats = source.reader.stats()
            first = source.reader.first_record_at
        counts = tally(local).snapshot()
    finally:
        local.close()
    if progress:
        print(file=sys.stderr)
    seconds = time.monotonic() - started
    return {
        "read": stats["read"],
        "seconds": round(seconds, 3),
        # Consumer group join and the first fetch: the benchmark measures from here on.
        "first_record_after_s": None if first is None else round(first - started, 3),
        "events_per_s": round(stats["read"] / seconds, 1) if seconds else None,
        "watermark": stats["watermark"],
        "payloads": counts.get(PAYLOAD, 0),
        "audit": counts.get(AUDIT, 0),
        "outcomes": counts.get(OUTCOME, 0),
        "dead_letters": counts.get(DEAD_LETTER, 0),
        "features": counts.get(FEATURES, 0),
        "dropped": {k[len(DROPPED_PREFIX):]: v for k, v in counts.items()
                    if k.startswith(DROPPED_PREFIX)},
        "active_customers": counts.get("active_customers", 0),
        **({"feature_writes": dict(writer.counts)} if isinstance(writer, CountFeatures) else {}),
    }


def _run_interruptibly(p: beam.Pipeline, stop: threading.Event) -> None:
    """Run `p`; on Ctrl-C (in the main thread) end the read as a bounded one would end.

    What was read is processed, every pending deadline fires at its own time and the
    acknowledged offsets are committed; a second Ctrl-C leaves at once.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_to_end(p)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failure.append(exc)

    job = threading.Thread(target=run, name="beam-direct", daemon=True)
    job.start()
    try:
        while job.is_alive():
            job.join(0.5)
    except KeyboardInterrupt:
        print("\ndirect: interrupted; finishing what was read (Ctrl-C again to quit now)",
              file=sys.stderr)
        stop.set()
        job.join()
    if failure:
        raise failure[0]


def _topic_exists(kafka: Any, topic: str) -> bool:
    """Whether the broker knows `topic` (the catalog-changes topic is read only if it does)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(**kafka_client_config(kafka))
    except (KafkaError, OSError):
        return False
    try:
        return topic in consumer.topics()
    except (KafkaError, OSError):
        return False
    finally:
        consumer.close()
