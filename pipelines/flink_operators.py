"""The Python operators of the Flink topology, one factory per operator, and their helpers.

    decode_fn(source, settings, read, products)  Kafka rows (or a replay file's lines) ->
                                          (Row(customer_id, (watermark, Item)), stamp);
                                          dead letters to side_outputs()[DEAD_LETTER]; the
                                          product stage's items (catalog changes, events with
                                          a product) also to side_outputs()[PRODUCTS] as
                                          (Row(product_id, (watermark, item)), stamp),
                                          only with `products` (a product stage is built)
    per_customer_fn(settings, emit_features, emit_counts, products=False)
                                          Row(customer_id, (watermark, Item)) -> payload
                                          requests; audit, dead letters (late), features and
                                          counts on side outputs. With `products`: the product
                                          stage (transforms/product_stage.py) keyed by
                                          product, its signals out as Row(customer_id,
                                          (signal_watermark, CatalogSignal)) for PerCustomer
    compose_fn(settings)                  PayloadRequest -> EmailPayload (stateless)

The operators at the sinks (Kafka rows, the feature writer, a replay's tags) are
pipelines/flink_sinks.py's.

Each factory defines its class inside it, so that pyflink is only imported when a job is
built and cloudpickle ships the class with each job by value: in thread mode a TaskManager
keeps the modules it imported for its whole life, and classes pickled by reference to this
module would run the first job's version of them. The keyed mechanics (one timer at the
earliest wake, the state cache, dropped counts) are pipelines/keyed.py's; the clock is
transforms/clock.py's. Why the stamps and watermarks are what they are: docs/flink-topology.md.
"""

from __future__ import annotations

import base64
import logging
import operator
import pickle
import struct
import time
from collections.abc import Iterator
from typing import Any

from pipelines import wire
from pipelines.common import build_core
from pipelines.flink_kafka import KafkaRead, offsets_consumer, partition_offsets
from pipelines.keyed import StateCache, add_counts, next_timer
from pipelines.wire import CHANGES, PROFILES
from transforms.bandit import Arms, ArmsState
from transforms.catalog_changes import CatalogChange
from transforms.clock import BACKLOG_HOLD, EventClock, receipt, replay_clock, source_partition
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    DROPPED,
    FEATURES,
    OUTCOME,
    PAYLOAD,
    CustomerProfile,
    DeadLetter,
    event_time,
)
from transforms.product_stage import (
    SIGNAL,
    ProductStage,
    ProductState,
    interest_of,
    product_of,
    signal_watermark,
)
from transforms.settings import Settings
from transforms.state import BUFFERED, CHANGED, UNCHANGED, CustomerState, rebuffer

log = logging.getLogger(__name__)

# Replay bookkeeping: +1 / -1 as a customer's state comes and goes.
ACTIVE = "active_customers"
ACTIVE_PRODUCTS = "active_products"   # the same for the product stage (not in the summary)
PRODUCTS = "products"                 # the decoders' side output of the product stage's items
LONG_MIN = -(1 << 63)
# Flink timestamp of the profiles read from Kafka: no information, so that only behaviour
# events move the watermark (docs/flink-topology.md).
NO_STAMP = LONG_MIN + (1 << 40)

# The decoders ask the broker for offsets at most every END_OFFSETS_EVERY ms.
END_OFFSETS_EVERY = 1_000
# PerCustomer adds its counts to Flink's metrics at most this often (ms).
COUNTERS_EVERY = 1_000


def keyed_type() -> Any:
    """What the decoders emit and PerCustomer is keyed on: Row(customer_id, (watermark, Item))."""
    from pyflink.common import Types

    return Types.ROW([Types.STRING(), Types.PICKLED_BYTE_ARRAY()])


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


def side_outputs() -> dict[str, Any]:
    """The side outputs of the operators, by kind (DROPPED: counts)."""
    from pyflink.common import Types
    from pyflink.datastream import OutputTag

    pickled = Types.PICKLED_BYTE_ARRAY()
    return {
        DEAD_LETTER: OutputTag("dead-letters", pickled),
        AUDIT: OutputTag("audit", pickled),
        FEATURES: OutputTag("features", pickled),
        DROPPED: OutputTag("counts", pickled),
        OUTCOME: OutputTag("outcomes", pickled),
        PRODUCTS: OutputTag("products", Types.TUPLE([keyed_type(), Types.LONG()])),
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


class KeptState:
    """A keyed stage's state in Flink, in two parts (PerCustomer, PerProduct, PerTrigger).

    The ValueState `name` holds (state, timer), pickled; the ListState "buffered" the pending
    entries appended since by steps that only buffered their item (their stage's step_change
    BUFFERED: `rebuffer` repeats them, each asked for `buffered_wake` of its entry), so such a
    step appends one entry instead of rewriting the whole state, and a duplicate (UNCHANGED)
    writes nothing. Together they are the source of truth, written (or cleared) on every change
    before anything is emitted, so every checkpoint has the state of exactly the records before
    its barrier; any other change writes the whole state and empties the list.

    `cache` keeps the live objects last written for up to `cache_size` keys (least recently
    used out), so that reading them back costs neither a call into Java nor unpickling. An
    entry is always what Flink holds: every write goes to both, nothing else writes Flink's
    states, an instance starts empty (a restore, failover or rescale builds new instances),
    and with a TTL (`ttl`, `ttl_ms`) an entry is not used past it, counted from before its
    write (Flink's clock starts later), so it never outlives what Flink would still return.
    Entries: (state, timer, whole state written at, entries in "buffered").
    """

    def __init__(self, runtime_context: Any, name: str, cache_size: int, ttl: Any | None,
                 ttl_ms: int | None, new_state: Any, rebuffer: Any, buffered_wake: Any) -> None:
        from pyflink.common import Types
        from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

        whole = ValueStateDescriptor(name, Types.PICKLED_BYTE_ARRAY())
        listed = ListStateDescriptor("buffered", Types.PICKLED_BYTE_ARRAY())
        if ttl is not None:
            whole.enable_time_to_live(ttl)
            listed.enable_time_to_live(ttl)
        self.whole = runtime_context.get_state(whole)
        self.buffered = runtime_context.get_list_state(listed)
        self.new_state, self.rebuffer, self.buffered_wake = new_state, rebuffer, buffered_wake
        self.cache: StateCache[tuple[Any, int | None, int, int]] = StateCache(
            cache_size, (lambda entry, _: True) if ttl_ms is None
            else (lambda entry, _: wall_ms() - entry[2] < ttl_ms))

    def held(self, key: str) -> tuple[Any, int | None, int, int]:
        """(state, timer, written at, entries buffered) of `key` (the current key): the cache,
        else Flink's two states."""
        entry = self.cache.take(key)               # back in at the end when kept: LRU
        if entry is not None:
            return entry
        held = self.whole.value()
        state, timer = (None, None) if held is None else held
        buffered = list(self.buffered.get())
        if buffered:
            if state is None:   # the whole state's TTL ran out first: its entries stay
                state = self.new_state(key)
            self.rebuffer(state, buffered)
            # The timer those steps kept: each one's wake_at was [its buffered_wake].
            timer = next_timer(timer, state, list(map(self.buffered_wake, buffered)))
        # Written at 0: when Flink wrote it is unknown, so the cache will not hand it back
        # before a write of the whole state (its TTL counts from that write).
        return state, timer, 0, len(buffered)

    def keep(self, key: str, old: Any, state: Any, timer: int | None, written_at: int, n: int,
             change: int) -> None:
        """Write what `change` says the step (or a wake: CHANGED) changed; `timer` is the one
        now set, `old` the state before, `written_at` and `n` as `held` gave them."""
        if change == UNCHANGED:
            self.cache.put(key, (state, timer, written_at, n))
        elif change == BUFFERED:
            self.buffered.add(state.pending[-1])
            self.cache.put(key, (state, timer, written_at, n + 1))
        elif state is None:
            if old is not None:
                self.whole.clear()
                if n:
                    self.buffered.clear()
        else:
            written_at = wall_ms()
            self.whole.update((state, timer))
            if n:
                self.buffered.clear()
            self.cache.put(key, (state, timer, written_at, 0))


def decode_fn(source: str | None, settings: Settings, read: KafkaRead | None = None,
              products: bool = True) -> Any:
    """The decoder of `source` (EVENTS, PROFILES, CHANGES; None: a replay file's pickled
    items); `products`: the product stage's items to side_outputs()[PRODUCTS] too."""
    from pyflink.common import Row
    from pyflink.datastream.functions import ProcessFunction

    tags = side_outputs()

    class Decode(ProcessFunction):
        """Raw Kafka rows (or a replay file's lines) ->
        (Row(customer_id, (watermark, Item)), stamp).

        Items go to the main output, dead letters to DEAD_LETTER. `watermark` is the watermark
        of the item's own partition before it (what PerCustomer judges its lateness against);
        `stamp` is the Flink timestamp that makes Flink's watermark follow this subtask's
        overall clock (profiles from Kafka: NO_STAMP; docs/flink-topology.md).
        """

        def __init__(self, source: str | None, settings: Settings,
                     read: KafkaRead | None = None, products: bool = True) -> None:
            self.source = source          # EVENTS, PROFILES, or None: pickled items (replay)
            self.settings = settings
            self.read = read
            self.products = products

        def open(self, runtime_context: Any) -> None:
            settings = self.settings
            self.offsets: Any = None
            if self.source is None:       # one file, read in order: the reference's clock
                self.clock = replay_clock(settings.core, wall_ms())
                return
            self.clock = EventClock(settings.core, settings.flink.idleness)
            k = settings.kafka
            self.topic = topic = (k.profiles_topic if self.source == PROFILES
                                  else k.catalog_changes_topic if self.source == CHANGES
                                  else k.events_topic)
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
                item = wire.replayed(pickle.loads(base64.b64decode(value)), core)
                if isinstance(item, DeadLetter):
                    yield tags[DEAD_LETTER], item
                    return
                key = item.product_id if isinstance(item, CatalogChange) else item.customer_id
                partition = source_partition(item.origin, key, core.replay_partitions,
                                             isinstance(item, CustomerProfile))
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
            change = isinstance(item, CatalogChange)
            t = item.occurred_at if change else event_time(item)
            clock.observe(partition, t, now, offset, received)
            if self.source == PROFILES or self.source == CHANGES:
                stamp = NO_STAMP
            else:    # the Flink timestamp whose bounded-out-of-orderness watermark is the clock
                combined = clock.watermark
                stamp = (LONG_MIN if combined is None else combined) + core.max_out_of_orderness + 1
            pid = product_of(item) if self.products else None
            if pid is not None:      # the product stage's (PerProduct: docs/flink-topology.md)
                yield tags[PRODUCTS], (Row(pid, (wm, interest_of(item))), stamp)
            if not change:
                yield Row(item.customer_id, (wm, item)), stamp

    return Decode(source, settings, read, products)


def per_customer_fn(settings: Settings, emit_features: bool, emit_counts: bool,
                    products: bool = False) -> Any:
    """The keyed operator over the core (features and counts on side outputs if asked);
    with `products`, over the product stage (PerProduct: signals on the main output)."""
    from pyflink.common import Row
    from pyflink.datastream.functions import KeyedProcessFunction

    tags = side_outputs()

    class PerCustomer(KeyedProcessFunction):
        """The core per customer: Row(customer_id, (watermark, Item)) -> payload requests (for
        Compose), with audit, dead letters (late), features and counts on side outputs. Its
        state, and the product stage's (ProductState), is kept in Flink as KeptState says:
        (CustomerState, timer) pickled and TTL'd, the entries buffered since in a list, the
        live objects in a cache of up to `flink.state_cache` customers.
        """

        def __init__(self, settings: Settings, emit_features: bool, emit_counts: bool,
                     products: bool = False) -> None:
            self.settings = settings
            self.emit_features = emit_features
            self.emit_counts = emit_counts
            self.products = products

        def open(self, runtime_context: Any) -> None:
            # Payloads leave as the core's PayloadRequests: Compose renders them downstream.
            stage: Any = (ProductStage(self.settings.core) if self.products
                          else build_core(self.settings, snapshots=self.emit_features))
            self.core = wire.KeyedCore(stage, compose=False)
            self.key = product_of if self.products else operator.attrgetter("customer_id")
            self.active = ACTIVE_PRODUCTS if self.products else ACTIVE
            flink = self.settings.flink
            self.kept = KeptState(runtime_context, "customer", flink.state_cache,
                                  state_ttl(self.settings), flink.state_ttl,
                                  ProductState if self.products else CustomerState, rebuffer,
                                  stage.buffered_wake)
            self.cache = self.kept.cache
            metrics = runtime_context.get_metrics_group()
            self.counters = {kind: metrics.counter(kind) for kind in (*wire.SINKS, DROPPED)}
            # Counted here and added to Flink's counters at most every COUNTERS_EVERY ms: each
            # inc() is a call into Java (the GIL released and taken back).
            self.counts = dict.fromkeys(self.counters, 0)
            self.dropped: dict[str, int] = {}          # by reason, for counters[DROPPED]
            self.counted_at = time.monotonic()

        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            carried, item = value
            cid: Any = self.key(item)
            old, timer, written_at, n = self.kept.held(cid)
            result = self.core.step_split(old, item, carried)
            yield from self._store(cid, old, timer, written_at, n, *result, ctx)

        def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
            cid = ctx.get_current_key()
            cid = cid if isinstance(cid, str) else cid[0]
            state, _, written_at, n = self.kept.held(cid)
            if state is None:
                return
            watermark = ctx.timer_service().current_watermark()
            yield from self._store(cid, state, None, written_at, n,
                                   *self.core.wake(state, watermark), CHANGED, ctx)

        def _store(self, cid: str, old: Any, timer: int | None, written_at: int, n: int,
                   state: Any, routed: wire.Routed, counts: dict[str, int], wake_at: list[int],
                   change: int, ctx: Any) -> Iterator[Any]:
            """Keep the state and one timer (keyed.next_timer; `timer` None after a wake: the
            one set has fired), writing what `change` says changed, then route the outputs."""
            new = next_timer(timer, state, wake_at)
            if new != timer:
                timers = ctx.timer_service()
                if timer is not None:
                    timers.delete_event_time_timer(timer)
                if new is not None:
                    timers.register_event_time_timer(new)
            self.kept.keep(cid, old, state, new, written_at, n, change)
            tally = self.counts
            for sink, record in routed:
                if sink == SIGNAL:   # PerProduct: for PerCustomer, never late by the clock
                    yield Row(record.customer_id, (signal_watermark(record), record))
                    continue
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
                yield tags[DROPPED], (self.active, 1 if old is None else -1)

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

    return PerCustomer(settings, emit_features, emit_counts, products)


def trigger_key_fn() -> Any:
    """The arms stage's key selector: an item's trigger type (transforms/bandit.py)."""
    from pyflink.datastream.functions import KeySelector

    class TriggerKey(KeySelector):
        """PayloadRequest | Outcome -> its trigger type."""

        def get_key(self, value: Any) -> str:
            return Arms.key(value)

    return TriggerKey()


def per_trigger_fn(settings: Settings, emit_counts: bool) -> Any:
    """The arms stage (transforms/bandit.py) keyed by trigger type, after PerCustomer."""
    from pyflink.datastream.functions import KeyedProcessFunction

    tags = side_outputs()

    class PerTrigger(KeyedProcessFunction):
        """PayloadRequest | Outcome -> requests with their variant (main output, for Compose),
        outcomes with theirs (side output OUTCOME), counts (DROPPED, if asked). Its state is
        kept as KeptState says (ValueState "arms": (ArmsState, timer), no TTL; a request or
        outcome that waits for its epoch, Arms.step_change BUFFERED, is appended to a list
        instead of rewriting the pending requests); its watermark is the operator's current
        one."""

        def __init__(self, settings: Settings, emit_counts: bool) -> None:
            self.settings = settings
            self.emit_counts = emit_counts

        def open(self, runtime_context: Any) -> None:
            self.arms = arms = build_core(self.settings).arms
            self.kept = KeptState(runtime_context, "arms", self.settings.flink.state_cache,
                                  None, None, ArmsState, arms.rebuffer, arms.buffered_wake)

        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            key = self.arms.key(value)
            old, timer, written_at, n = self.kept.held(key)
            wm = ctx.timer_service().current_watermark()
            held = self.arms.held(old)
            state, outputs, wake_at = self.arms.step(old, value, None if wm <= LONG_MIN else wm)
            change = self.arms.step_change(held, state, outputs, wake_at)
            yield from self._store(key, old, timer, written_at, n, state, outputs, wake_at,
                                   change, ctx, woke=False)

        def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
            key = ctx.get_current_key()
            key = key if isinstance(key, str) else key[0]
            state, timer, written_at, n = self.kept.held(key)
            if state is None:
                return
            result = self.arms.wake(state, ctx.timer_service().current_watermark())
            yield from self._store(key, state, timer, written_at, n, *result, CHANGED, ctx,
                                   woke=True)

        def _store(self, key: str, old: Any, timer: int | None, written_at: int, n: int,
                   state: Any, outputs: list[Any], wake_at: list[int], change: int, ctx: Any,
                   woke: bool) -> Iterator[Any]:
            new = next_timer(timer, state, wake_at, woke)
            timers = ctx.timer_service()
            if timer is not None and not woke and new != timer:
                timers.delete_event_time_timer(timer)
            if new is not None and (woke or new != timer):
                timers.register_event_time_timer(new)
            self.kept.keep(key, old, state, new, written_at, n, change)
            for kind, record in outputs:
                if kind == PAYLOAD:
                    yield record
                elif kind == OUTCOME:
                    yield tags[OUTCOME], record
                elif self.emit_counts:
                    yield tags[DROPPED], (record, 1)

    return PerTrigger(settings, emit_counts)


def compose_fn(settings: Settings) -> Any:
    """The stateless compose stage after PerCustomer."""
    from pyflink.datastream.functions import MapFunction

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

    return Compose(settings)
