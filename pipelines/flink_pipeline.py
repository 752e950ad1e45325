"""The job as a PyFlink DataStream topology: a thin adapter over the core (transforms/).

    build_topology(events, profiles, settings, emit_features, emit_counts) -> Outputs
    events, profiles     DataStream of Kafka rows (value, topic, partition, offset), or of one
                         replay file's lines (pickled items in arrival order, profiles and dead
                         letters among them; then `profiles` is None)
    | "DecodeEvents" / "DecodeProfiles"      wire.decode + wire.admit in Python; each output
                                             (Row(customer_id, (watermark, Item)), stamp),
                                             dead letters to a side output
    | union, "ItemsWatermarks"               bounded out-of-orderness + idleness
    | keyBy field 0 (Java: no Python key selector operator)
    | "PerCustomer"                          KeyedProcessFunction over wire.KeyedCore: the
                                             core's state in a ValueState (pickled, TTL'd; a
                                             cache of live objects for reads), one event-time
                                             timer from wake_at; payload requests out
    | "Compose"                              stateless map: request -> EmailPayload
    -> payloads (main output), audit / dead letters / features (side outputs of PerCustomer)

Kafka in and out goes through the Kafka SQL connector of the flink-sql-connector-kafka jar
(a KafkaSource and a KafkaSink underneath), declared as tables and converted to and from
DataStreams, because PyFlink's DataStream KafkaSource only hands Python the value bytes (not
the topic / partition / offset a dead letter must carry) and its KafkaRecordSerializationSchema
cannot write headers. The tables give both: the `topic`, `partition`, `offset` metadata
columns in, a `headers` metadata column out (payloads carry their message_id in a header).

Entry points: `run_kafka(settings, jars, options)` (`personalize run --runner flink`; the
cluster's submission is runners/flink_cluster.py),
`run_replay(items, settings, out_dir)` (`personalize replay --runner flink`), which writes the
same files as the reference runner (pipelines/outputs.py).

Watermarks and lateness: transforms/clock.py, the rule of every runner. Each decoder subtask
keeps an EventClock over the partitions its source subtask reads (the connector's split
assignment, `split_owner`; start and end offsets asked of the broker, bounded reads exactly
to their stop offsets). Every item carries the watermark of its own partition from before it,
and PerCustomer judges it against that and the customer's processed-up-to time only, not
against Flink's watermark. Timers follow the clock's combined watermark: the decoder stamps
each record with combined + max_out_of_orderness + 1 rather than its event time, and the
stream gets WatermarkStrategy.for_bounded_out_of_orderness(max_out_of_orderness) with
idleness (so an events subtask with nothing to read does not hold back the timers); nothing
downstream reads element timestamps (the core keeps its own windows).
Profiles are joined by a union before the watermarks, not as a second (connected) input: a
CRM update carries CRM time, not stream time, and Flink's watermark of a two-input operator is
the minimum of both inputs, so an active but lagging profiles feed would hold back every
deadline (and any other stamp lets the profiles drive time while the events are idle). Profiles
from Kafka get NO_STAMP: only behaviour events move the watermark. A profile behind its
customer's processed time is applied at once (the core's rule for late profiles), one ahead of
it is buffered like an event. Known limit: with parallelism > 1, a watermark subtask whose
event partitions are idle but which still receives profiles is not idle, and holds back the
others at its last watermark.
A replay reads one file in arrival order through one decoder, each item in its
clock.source_partition (the file, or core.replay_partitions of them), with idleness 0: the
reference runner's clock, hence the same dead letters, payloads and audit.
Known limits: a Python ProcessFunction has no timers, so the clock is only re-evaluated (and
the broker's offsets only asked) when a record arrives: with no input at all the watermark
stands still (so the clock's follow_wall_clock is off here), and a pending deadline fires with
the next record or at the end of a bounded read. The clock is not in the checkpoint: after a
restore it starts empty and holds until the partitions deliver again or are known to be read
to their end. Flink's own idleness is per watermark subtask and by the wall clock: with
parallelism > 1, a subtask whose source delivers nothing for `flink.idleness` while its
partitions still have records is left out of Flink's watermark, so its customers' deadlines
can fire ahead of those records, which are then late for their customer (not for their
partition); with parallelism 1 this cannot happen. Likewise a partition that went idle and
comes back behind the others (the price of not stalling on idle partitions).

Savepoints: every operator built here has a stable `.uid()`. The Kafka table sources and sinks
get planner uids (`table.exec.uid.generation: ALWAYS`, derived from the order the tables are
declared, which is fixed here). PyFlink adds stateless helper operators of its own (key
extraction for key_by, the Python-to-Java conversions of the tables) whose ids carry no state.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import pickle
import shutil
import struct
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import wire
from pipelines.common import build_core
from pipelines.flink_kafka import (
    KafkaRead,
    kafka_read,
    offsets_consumer,
    partition_offsets,
    row_type,
    sink_ddl,
    source_ddl,
)
from pipelines.keyed import StateCache, add_counts, next_timer
from pipelines.outputs import OutputFiles
from pipelines.wire import EVENTS, PROFILES
from transforms.clock import BACKLOG_HOLD, EventClock, receipt, replay_clock, source_partition
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    DROPPED,
    FEATURES,
    PAYLOAD,
    DeadLetter,
    Item,
    event_time,
)
from transforms.settings import Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Replay bookkeeping: +1 / -1 as a customer's state comes and goes.
ACTIVE = "active_customers"
LONG_MIN = -(1 << 63)
# Flink timestamp of the profiles read from Kafka: no information, so that only behaviour
# events move the watermark (see the module doc).
NO_STAMP = LONG_MIN + (1 << 40)

# The decoders ask the broker for offsets at most every END_OFFSETS_EVERY ms.
END_OFFSETS_EVERY = 1_000
# PerCustomer adds its counts to Flink's metrics at most this often (ms).
COUNTERS_EVERY = 1_000


def _keyed_type() -> Any:
    """What the decoders emit and PerCustomer is keyed on: Row(customer_id, (watermark, Item))."""
    from pyflink.common import Types

    return Types.ROW([Types.STRING(), Types.PICKLED_BYTE_ARRAY()])


# ------------------------------------------------------------------------------ configuration


def checkpoint_dir(settings: Settings) -> str:
    """Where checkpoints and savepoints go (a file:// URI unless configured)."""
    if settings.flink.checkpoint_dir:
        return settings.flink.checkpoint_dir
    path = Path(settings.paths.state_dir)
    path = path if path.is_absolute() else PROJECT_ROOT / path
    return (path / "flink" / "checkpoints").as_uri()


def flink_config(
    settings: Settings, jars: Sequence[Path] = (), local: bool = True
) -> dict[str, str]:
    """The job's Flink configuration from settings.flink (the same locally and on a cluster).

    `local` adds what the in-process mini-cluster needs: the connector jar on pipeline.jars and
    a PYTHONPATH with this virtualenv and the project (in thread mode the embedded interpreter
    does not see the virtualenv's site-packages by itself). A cluster job gets the jar from
    `flink run --jarfile` and its Python from the cluster's python.executable (an environment
    with this project installed; see docs/flink-deploy.md).
    """
    f = settings.flink
    conf = {
        "python.execution-mode": f.execution_mode,
        "parallelism.default": str(f.parallelism),
        "pipeline.auto-watermark-interval": f"{f.watermark_interval} ms",
        "execution.checkpointing.interval": f"{f.checkpoint_interval} ms",
        "execution.checkpointing.mode": f.checkpoint_mode.upper().replace("-", "_"),
        "execution.checkpointing.dir": checkpoint_dir(settings),
        "execution.checkpointing.savepoint-dir": checkpoint_dir(settings) + "-savepoints",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.min-pause": f"{min(f.checkpoint_interval // 2, 1000)} ms",
        "state.backend.type": f.state_backend,
        "table.exec.uid.generation": "ALWAYS",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "10",
        "restart-strategy.fixed-delay.delay": "2 s",
    }
    if local:
        python = sys.executable
        paths = [sysconfig.get_paths()["purelib"], str(PROJECT_ROOT)]
        conf.update({
            "python.executable": python,
            "python.client.executable": python,
            "python.pythonpath": os.pathsep.join(paths),
        })
        if jars:
            conf["pipeline.jars"] = ";".join(Path(j).resolve().as_uri() for j in jars)
    return conf


def make_env(settings: Settings, jars: Sequence[Path] = (), local: bool = True,
             extra: dict[str, str] | None = None, checkpointing: bool = True) -> Any:
    """A StreamExecutionEnvironment configured by `flink_config` (+ `extra`); replays run
    without checkpoints (nothing to recover: a failed replay is run again)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = Configuration()
    values = {**flink_config(settings, jars, local), **(extra or {})}
    if not checkpointing:
        values.pop("execution.checkpointing.interval")
    for key, value in values.items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(settings.flink.parallelism)
    return env


# ------------------------------------------------------------------------------ the clock


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def task_info(runtime_context: Any) -> tuple[int, int] | None:
    """(index, parallelism) of an operator's subtask, or None if PyFlink cannot tell.

    In thread mode PyFlink 2's RuntimeContext calls RuntimeContext methods that Flink 2 removed
    (getIndexOfThisSubtask); the same numbers are on the Java context's TaskInfo.
    """
    try:
        return (runtime_context.get_index_of_this_subtask(),
                runtime_context.get_number_of_parallel_subtasks())
    except Exception:  # noqa: BLE001, S110 - pemja raises its own kinds
        pass
    try:
        info = runtime_context._runtime_context.getTaskInfo()
        return int(info.getIndexOfThisSubtask()), int(info.getNumberOfParallelSubtasks())
    except Exception:  # noqa: BLE001
        return None


def _tp(partition: Any) -> tuple[str, int]:
    """A Kafka source's clock partition: (topic, partition)."""
    topic, number = partition
    return topic, number


def split_owner(topic: str, partition: int, parallelism: int) -> int:
    """The source subtask the Kafka connector assigns a partition to (its default
    KafkaSourceEnumerator.getSplitOwner: round robin from a topic-specific start)."""
    h = 0
    raw = topic.encode("utf-16-be")
    for (unit,) in struct.iter_unpack(">H", raw):                # Java's String.hashCode
        h = (31 * h + unit) & 0xFFFFFFFF
    start = (h * 31 & 0x7FFFFFFF) % parallelism
    return (start + partition) % parallelism


# ------------------------------------------------------------------------------ operators


def _tags() -> dict[str, Any]:
    from pyflink.common import Types
    from pyflink.datastream import OutputTag

    pickled = Types.PICKLED_BYTE_ARRAY()
    return {
        DEAD_LETTER: OutputTag("dead-letters", pickled),
        AUDIT: OutputTag("audit", pickled),
        FEATURES: OutputTag("features", pickled),
        DROPPED: OutputTag("counts", pickled),
    }


def state_ttl(settings: Settings) -> Any:
    """The TTL of the per-customer state (a backstop: the core clears a state itself once all
    of it has expired). Cleanup is configured explicitly: PyFlink's default adds RocksDB's
    compaction filter through a py4j Duration, and a TaskManager's embedded Python has no py4j
    gateway. Expired entries go on read, incrementally, and in full snapshots."""
    from pyflink.common.time import Time
    from pyflink.datastream.state import StateTtlConfig

    return (
        StateTtlConfig.new_builder(Time.milliseconds(settings.flink.state_ttl))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .disable_cleanup_in_background()
        .cleanup_incrementally(10, False)
        .cleanup_full_snapshot()
        .build()
    )


def _functions() -> dict[str, type]:
    """The Python functions of the topology.

    Defined in a function so that pyflink is only imported when a job is built, and so that
    cloudpickle ships them with each job by value: in thread mode a TaskManager keeps the
    modules it imported for its whole life, and functions pickled by reference to this module
    would run the first job's version of them.
    """
    from pyflink.common import Row, Types
    from pyflink.datastream.functions import KeyedProcessFunction, MapFunction, ProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor

    tags = _tags()

    class Decode(ProcessFunction):
        """Raw Kafka rows (or a replay file's lines) ->
        (Row(customer_id, (watermark, Item)), stamp).

        Items go to the main output, dead letters to DEAD_LETTER. `watermark` is the watermark
        of the item's own partition before it (what PerCustomer judges its lateness against);
        `stamp` is the Flink timestamp that makes Flink's watermark follow this subtask's
        overall clock (profiles from Kafka: NO_STAMP; see the module doc).
        """

        def __init__(self, source: str | None, settings: Settings,
                     read: KafkaRead | None = None) -> None:
            self.source = source          # EVENTS, PROFILES, or None: pickled items (replay)
            self.settings = settings
            self.read = read

        def open(self, runtime_context: Any) -> None:
            settings = self.settings
            self.offsets: Any = None
            if self.source is None:       # one file, read in order: the reference's clock
                self.clock = replay_clock(settings.core, wall_ms())
                return
            self.clock = EventClock(settings.core, settings.flink.idleness)
            self.topic = topic = (settings.kafka.profiles_topic if self.source == PROFILES
                                  else settings.kafka.events_topic)
            read = self.read or KafkaRead()
            try:
                consumer = offsets_consumer(settings, read)
            except Exception as exc:  # noqa: BLE001 - no broker: the clock uses idleness alone
                log.warning("cannot ask Kafka for offsets: %s", exc)
                consumer = None
            parts, start, end = ([], {}, {}) if consumer is None else \
                partition_offsets(settings, topic, read, consumer)
            task = task_info(runtime_context)
            if task is not None:          # the partitions this subtask's source reads
                parts = [p for p in parts if split_owner(topic, p, task[1]) == task[0]]
            bounded = isinstance(read.stop, dict)
            if isinstance(read.stop, dict):
                end = {p: o for (t, p), o in read.stop.items() if t == topic}
                parts = [p for p in parts if start.get(p, -1) < end.get(p, 1 << 62)]
            self.clock.expect([(topic, p) for p in parts], wall_ms(),
                              start={(topic, p): o for p, o in start.items()},
                              end={(topic, p): o for p, o in end.items()}, bounded=bounded)
            if consumer is not None:
                self.offsets, self.asked_at = consumer, wall_ms()

        def close(self) -> None:
            if self.offsets is not None:
                self.offsets.close()
                self.offsets = None

        def _ask_offsets(self, now: int) -> None:
            """Once in a while: the end offsets of the partitions read (unbounded reads), and
            where the partitions that delivered nothing yet stand."""
            from kafka import TopicPartition

            clock, consumer = self.clock, self.offsets
            self.asked_at = now
            try:
                if not clock.bounded:
                    ends = consumer.end_offsets([TopicPartition(*_tp(p)) for p in clock.last_read])
                    clock.set_ends({(tp.topic, tp.partition): o for tp, o in ends.items()})
                committed = {p: consumer.committed(TopicPartition(*_tp(p)))
                             for p in clock.waiting()}
            except Exception as exc:  # noqa: BLE001 - try again later; idleness still applies
                log.warning("cannot read the offsets of %s: %s", self.topic, exc)
                self.asked_at = now + BACKLOG_HOLD
                return
            clock.set_starts({p: o for p, o in committed.items() if o is not None})

        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            clock, core = self.clock, self.settings.core
            now = wall_ms()                   # idleness; receipt when a record has no timestamp
            if self.source is None:
                item = pickle.loads(base64.b64decode(value))
                if isinstance(item, DeadLetter):
                    yield tags[DEAD_LETTER], item
                    return
                partition = source_partition(item.origin, item.customer_id,
                                             core.replay_partitions)
                offset, received = None, now
            else:
                if self.offsets is not None and now - self.asked_at >= END_OFFSETS_EVERY:
                    self._ask_offsets(now)
                partition, offset = (value[1], value[2]), value[3]
                received = receipt(value[4], now)
                item = wire.decode(self.source, value[0], value[1], value[2], offset,
                                   core, received)
            if not isinstance(item, DeadLetter):
                item = wire.admit(item, core, received)
            if isinstance(item, DeadLetter):
                clock.observe(partition, None, now, offset)
                yield tags[DEAD_LETTER], item
                return
            wm = clock.partition_watermark(partition)
            clock.observe(partition, event_time(item), now, offset, received)
            if self.source == PROFILES:
                stamp = NO_STAMP
            else:    # the Flink timestamp whose bounded-out-of-orderness watermark is the clock
                combined = clock.watermark
                stamp = (LONG_MIN if combined is None else combined) + core.max_out_of_orderness + 1
            yield Row(item.customer_id, (wm, item)), stamp

    class PerCustomer(KeyedProcessFunction):
        """The core per customer: Row(customer_id, (watermark, Item)) -> payload requests (for
        Compose), with audit, dead letters (late), features and counts on side outputs.

        Flink's ValueState holds (CustomerState, timer), pickled and TTL'd: it is the source
        of truth, written (or cleared) on every change before anything is emitted, so every
        checkpoint has the state of exactly the records before its barrier. `cache` keeps the
        live objects this instance last wrote for up to `flink.state_cache` customers (least
        recently used out), so that reading them back costs neither a call into Java nor
        unpickling 1-2 KB. An entry is always what the ValueState holds: every write goes to
        both, nothing else writes the ValueState, an instance starts empty (a restore,
        failover or rescale builds new instances, and open() empties it), and an entry is not
        used past the state's TTL, counted from before its write (Flink's clock starts later),
        so it never outlives what Flink would still return.
        """

        def __init__(self, settings: Settings, emit_features: bool, emit_counts: bool) -> None:
            self.settings = settings
            self.emit_features = emit_features
            self.emit_counts = emit_counts

        def open(self, runtime_context: Any) -> None:
            # Payloads leave as the core's PayloadRequests: Compose renders them downstream.
            self.core = wire.KeyedCore(build_core(self.settings), compose=False)
            descriptor = ValueStateDescriptor("customer", Types.PICKLED_BYTE_ARRAY())
            descriptor.enable_time_to_live(state_ttl(self.settings))
            self.state = runtime_context.get_state(descriptor)
            metrics = runtime_context.get_metrics_group()
            self.counters = {kind: metrics.counter(kind) for kind in (*wire.SINKS, DROPPED)}
            # Counted here and added to Flink's counters at most every COUNTERS_EVERY ms: each
            # inc() is a call into Java (the GIL released and taken back).
            self.counts = dict.fromkeys(self.counters, 0)
            self.dropped: dict[str, int] = {}          # by reason, for counters[DROPPED]
            self.counted_at = time.monotonic()
            ttl = self.settings.flink.state_ttl
            # (state, timer, written at): used while younger than the state's TTL.
            self.cache: StateCache[tuple[Any, int | None, int]] = StateCache(
                self.settings.flink.state_cache, lambda entry, _: wall_ms() - entry[2] < ttl)

        def _held(self, cid: str) -> tuple[Any, int | None]:
            """(state, timer) of customer `cid` (the current key): the cache, else Flink."""
            entry = self.cache.take(cid)               # back in at the end when stored: LRU
            if entry is not None:
                return entry[0], entry[1]
            held = self.state.value()
            return (None, None) if held is None else held

        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            carried, item = value
            cid = item.customer_id
            old, timer = self._held(cid)
            yield from self._store(cid, old, timer, *self.core.step(old, item, carried), ctx)

        def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
            cid = ctx.get_current_key()
            cid = cid if isinstance(cid, str) else cid[0]
            state, _ = self._held(cid)
            if state is None:
                return
            watermark = ctx.timer_service().current_watermark()
            yield from self._store(cid, state, None, *self.core.wake(state, watermark), ctx)

        def _store(self, cid: str, old: Any, timer: int | None, state: Any,
                   routed: wire.Routed, counts: dict[str, int], wake_at: list[int],
                   ctx: Any) -> Iterator[Any]:
            """Keep the state and one timer (keyed.next_timer; `timer` None after a wake: the
            one set has fired), then route the outputs."""
            new = next_timer(timer, state, wake_at)
            if new != timer:
                timers = ctx.timer_service()
                if timer is not None:
                    timers.delete_event_time_timer(timer)
                if new is not None:
                    timers.register_event_time_timer(new)
            if state is None:
                if old is not None:
                    self.state.clear()
            else:
                written_at = wall_ms()
                self.state.update((state, new))
                self.cache.put(cid, (state, new, written_at))
            tally = self.counts
            for sink, record in routed:
                tally[sink] += 1
                if sink == PAYLOAD:
                    yield record
                elif sink != FEATURES or self.emit_features:
                    yield tags[sink], record
            if time.monotonic() - self.counted_at >= COUNTERS_EVERY / 1000:
                self._count()
            if counts:
                add_counts(self.dropped, counts)
                if self.emit_counts:
                    for reason, n in counts.items():
                        yield tags[DROPPED], (reason, n)
            if self.emit_counts and (old is None) != (state is None):
                yield tags[DROPPED], (ACTIVE, 1 if old is None else -1)

        def _count(self) -> None:
            """Add what was counted since the last time to Flink's counters."""
            self.counts[DROPPED] += sum(self.dropped.values())
            self.dropped.clear()
            for kind, n in self.counts.items():
                if n:
                    self.counters[kind].inc(n)
                    self.counts[kind] = 0
            self.counted_at = time.monotonic()

        def close(self) -> None:
            self._count()

    class Compose(MapFunction):
        """A payload request of PerCustomer -> its EmailPayload (transforms/compose.py): the
        stateless half of a trigger, recommendations, catalog and templates, in an operator
        of its own (the keyed one does no template work)."""

        def __init__(self, settings: Settings) -> None:
            self.settings = settings

        def open(self, runtime_context: Any) -> None:
            self.compose = build_core(self.settings).compose

        def map(self, request: Any) -> Any:
            return self.compose(request)

    class KafkaRow(MapFunction):
        """A sink record -> Row(k, v[, headers]) of its Kafka table (pipelines.wire encoders)."""

        def __init__(self, sink: str) -> None:
            self.sink = sink

        def map(self, record: Any) -> Any:
            if self.sink == PAYLOAD:
                key, value, headers = wire.payload_record(record)
                return Row(key, value, dict(headers))
            if self.sink == AUDIT:
                return Row(*wire.audit_record(record))
            return Row(*wire.dead_letter_record(record))

    class WriteFeatures(ProcessFunction):
        """FEATURES records -> the feature writer (pipelines.feature_store); emits nothing."""

        def __init__(self, writer: Any) -> None:
            self.writer = writer

        def process_element(self, record: Any, ctx: Any) -> Iterator[Any]:
            self.writer.write(record)
            return iter(())

        def close(self) -> None:
            close = getattr(self.writer, "close", None) or getattr(self.writer, "flush", None)
            if callable(close):
                close()

    class Tag(MapFunction):
        """record -> (kind, record), for collecting a replay's outputs on one stream."""

        def __init__(self, kind: str) -> None:
            self.kind = kind

        def map(self, record: Any) -> Any:
            return self.kind, record

    return {"Decode": Decode, "PerCustomer": PerCustomer, "Compose": Compose,
            "KafkaRow": KafkaRow,
            "WriteFeatures": WriteFeatures, "Tag": Tag}


# ------------------------------------------------------------------------------ the topology


@dataclass
class Outputs:
    """The topology's output streams (pickled records), by sink."""

    payloads: Any
    audit: Any
    dead_letters: Any          # from the decoders and the core (late), one stream
    features: Any | None       # only when a feature writer or a collector asked for them
    counts: Any | None         # (reason, n) of dropped items, and ACTIVE deltas (replays)


def watermarked(ds: Any, settings: Settings, uid: str, name: str) -> Any:
    """(Row(customer_id, (watermark, Item)), time) -> Row(customer_id, (watermark, Item))
    stamped with its time, with watermarks: bounded out-of-orderness and idleness.

    The Java half of PyFlink's assign_timestamps_and_watermarks (the time was already taken in
    the decoder, so no Python timestamp assigner runs), with our own uids.
    """
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    eventtime = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.eventtime
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(settings.core.max_out_of_orderness))
        .with_idleness(Duration.of_millis(settings.flink.idleness))
    )
    j_stamped = ds._j_data_stream.assignTimestampsAndWatermarks(
        strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner()))
    j_stamped.uid(f"{uid}-watermarks").name(f"{name}Watermarks")
    j_items = j_stamped.map(eventtime.RemoveTimestampMapFunction(),
                            _keyed_type().get_java_type_info())
    return DataStream(j_items).uid(f"{uid}-stamped").name(f"{name}Stamped")


def by_customer(items: Any, value_type: Any = None) -> Any:
    """A stream of Row(customer_id, value) keyed by customer_id, in Java.

    What PyFlink's key_by builds after its Python key selector (an extra Python operator that
    unpickles and re-pickles every record only to put the key in front): the decoders already
    emit the key as the row's first, typed field. Same key type (Row(STRING)) and the same
    keyed Python operator downstream, which sees the value (of `value_type`; default pickled).
    """
    from pyflink.common import Types
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    j_keyed = items._j_data_stream.keyBy(get_gateway().jvm.KeyByKeySelector(),
                                         Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, value_type or Types.PICKLED_BYTE_ARRAY(), items)


def build_topology(events: Any, profiles: Any | None, settings: Settings,
                   emit_features: bool = False, emit_counts: bool = False,
                   read: KafkaRead | None = None) -> Outputs:
    """Wire decode -> watermarks -> PerCustomer over the input streams.

    `events` and `profiles` carry Kafka rows (Row(value, topic, partition, offset)); with
    `profiles` None, `events` carries a replay file's lines, events and profiles in arrival
    order through one decoder (so the whole input shares one clock, as in the reference runner).
    `read` tells the Kafka decoders where the read of each partition ends, if it is bounded.
    """
    from pyflink.common import Types

    fn = _functions()
    tags = _tags()
    pickled = Types.PICKLED_BYTE_ARRAY()
    stamped = Types.TUPLE([_keyed_type(), Types.LONG()])
    if profiles is None:
        decoded = events.process(fn["Decode"](None, settings), output_type=stamped) \
            .uid("decode-replay").name("DecodeReplay")
        items = decoded
        dead = [decoded.get_side_output(tags[DEAD_LETTER])]
    else:
        dec_events = events.process(fn["Decode"](EVENTS, settings, read),
                                    output_type=stamped).uid("decode-events").name("DecodeEvents")
        dec_profiles = profiles.process(fn["Decode"](PROFILES, settings, read),
                                        output_type=stamped) \
            .uid("decode-profiles").name("DecodeProfiles")
        items = dec_events.union(dec_profiles)
        dead = [dec_events.get_side_output(tags[DEAD_LETTER]),
                dec_profiles.get_side_output(tags[DEAD_LETTER])]
    per_customer = (
        by_customer(watermarked(items, settings, "items", "Items"))
        .process(fn["PerCustomer"](settings, emit_features, emit_counts), output_type=pickled)
        .uid("per-customer").name("PerCustomer")
    )
    payloads = per_customer.map(fn["Compose"](settings), output_type=pickled) \
        .uid("compose").name("Compose")
    dead.append(per_customer.get_side_output(tags[DEAD_LETTER]))
    return Outputs(
        payloads=payloads,
        audit=per_customer.get_side_output(tags[AUDIT]),
        dead_letters=dead[0].union(*dead[1:]),
        features=per_customer.get_side_output(tags[FEATURES]) if emit_features else None,
        counts=per_customer.get_side_output(tags[DROPPED]) if emit_counts else None,
    )


# ------------------------------------------------------------------------------ Kafka I/O


def discard(ds: Any, uid: str, name: str) -> None:
    """End a stream in Flink's DiscardingSink (for operators run for their side effects)."""
    from pyflink.datastream.connectors import Sink
    from pyflink.java_gateway import get_gateway

    j_sink = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()
    ds.sink_to(Sink(j_sink)).uid(uid).name(name)


def build_kafka_job(env: Any, settings: Settings, read: KafkaRead,
                    feature_writer: Any | None = None) -> Any:
    """The whole Kafka job on `env`: sources, topology, sinks. Returns the statement set
    (already attached to env: run it with env.execute)."""
    from pyflink.table import StreamTableEnvironment

    k = settings.kafka
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
    t_env.execute_sql(source_ddl("events_in", k.events_topic, settings, read))
    t_env.execute_sql(source_ddl("profiles_in", k.profiles_topic, settings, read))
    # (value, topic, partition, offset, record timestamp in epoch ms)
    columns = "`value`, `topic`, `partition`, `offset`, `received`"
    events = t_env.to_data_stream(t_env.sql_query(f"SELECT {columns} FROM events_in"))
    profiles = t_env.to_data_stream(t_env.sql_query(f"SELECT {columns} FROM profiles_in"))
    out = build_topology(events, profiles, settings, emit_features=feature_writer is not None,
                         read=read)
    fn = _functions()
    statements = t_env.create_statement_set()
    for sink, stream, topic in (
        (PAYLOAD, out.payloads, k.payloads_topic),
        (AUDIT, out.audit, k.audit_topic),
        (DEAD_LETTER, out.dead_letters, k.dead_letters_topic),
    ):
        table = f"{sink}_out"
        headers = sink == PAYLOAD
        t_env.execute_sql(sink_ddl(table, topic, settings, headers))
        rows = stream.map(fn["KafkaRow"](sink), output_type=row_type(headers)) \
            .uid(f"encode-{sink}").name(f"Encode{sink.title().replace('_', '')}")
        statements.add_insert(table, t_env.from_data_stream(rows))
    if feature_writer is not None:
        assert out.features is not None  # asked for with emit_features
        written = out.features.process(fn["WriteFeatures"](feature_writer)) \
            .uid("write-features").name("WriteFeatures")
        discard(written, "features-done", "FeaturesDone")
    statements.attach_as_datastream()
    return statements


# ------------------------------------------------------------------------------ run_kafka


def run_kafka(settings: Settings, jars: Sequence[Path], options: argparse.Namespace | None = None,
              feature_writer: Any | None = None) -> int:
    """`personalize run --runner flink`: the Kafka job on a mini-cluster in this process, with
    `jars` (the Kafka connector) on its classpath."""
    options = options or argparse.Namespace()
    if feature_writer is None and getattr(options, "feature_store", False):
        from pipelines.feature_store import redis_writer

        feature_writer = redis_writer(settings)
    read = kafka_read(settings, options)
    extra = {}
    savepoint = getattr(options, "savepoint", None)
    if savepoint:
        extra["execution.state-recovery.path"] = savepoint
    env = make_env(settings, jars, local=True, extra=extra)
    build_kafka_job(env, settings, read, feature_writer)
    result = env.execute("personalize")
    log.info("flink job finished in %.1fs", result.get_net_runtime() / 1000)
    return 0


# ------------------------------------------------------------------------------ replay


def _write_items(items: Iterable[Item | DeadLetter], path: Path, out: OutputFiles) -> int:
    n = 0
    with path.open("wb") as fh:
        for item in items:
            out.count_input(item)
            fh.write(base64.b64encode(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)))
            fh.write(b"\n")
            n += 1
    return n


def build_replay(env: Any, path: Path, settings: Settings) -> Any:
    """A replay file (one pickled item per line, arrival order) -> one stream of (kind, record)
    with every output of the topology, for the caller to collect."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    fn = _functions()
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path)).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "ReplayFile") \
        .uid("replay-file").set_parallelism(1)
    out = build_topology(lines, None, settings, emit_features=True, emit_counts=True)
    assert out.features is not None and out.counts is not None  # both asked for
    pickled = Types.PICKLED_BYTE_ARRAY()
    tagged = [
        stream.map(fn["Tag"](kind), output_type=pickled).uid(f"tag-{kind}").name(f"Tag-{kind}")
        for kind, stream in ((PAYLOAD, out.payloads), (AUDIT, out.audit),
                             (DEAD_LETTER, out.dead_letters), (FEATURES, out.features),
                             (DROPPED, out.counts))
    ]
    # Compose -> Tag would be fused into one Python operator, and PyFlink's chaining of the
    # collected union then keeps the unfused pair as well (two operators with uid "compose").
    tagged[0].start_new_chain()
    return tagged[0].union(*tagged[1:])


def run_replay(items: Iterable[Item | DeadLetter], settings: Settings, out_dir: Path,
               extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Replay `items` through the Flink topology on a local mini-cluster into out_dir/*.jsonl
    (the reference runner's files); returns the summary.

    The items go to a temporary file read by a FileSource (one split, so arrival order is
    kept); at its end the watermark goes to the end of time and every deadline fires. The
    outputs come back with execute_and_collect (they are far fewer than the inputs).
    """
    out = OutputFiles(Path(out_dir))
    work = Path(tempfile.mkdtemp(prefix="flink-replay-"))
    try:
        path = work / "items.txt"
        _write_items(items, path, out)
        env = make_env(settings, local=True, extra=extra, checkpointing=False)
        collected = build_replay(env, path, settings)
        active = 0
        with collected.execute_and_collect("personalize-replay") as results:
            for kind, record in results:
                if kind == DROPPED:
                    reason, n = record
                    if reason == ACTIVE:
                        active += n
                        continue
                    for _ in range(n):
                        out.write((DROPPED, reason))
                elif kind == FEATURES:
                    out.write(record)           # ("features", snapshot) | ("erase", customer_id)
                else:
                    out.write((kind, record))
        out.close()
        out.summary["active_customers_at_end"] = active
        return out.summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
