"""The job as an Apache Beam topology (DirectRunner, streaming): a thin adapter over the core.

    build_pipeline(p, events, profiles, sinks, settings, core=None)

    events, profiles    (record, watermark, now, batch): record = KafkaRecord (raw bytes
                        from Kafka) or an item read from a file (Item | DeadLetter); watermark:
                        that of the record's own partition when the source read it, and now:
                        the wall clock then (transforms/clock.py); batch:
                        the source's batch number (beam_local.Flow), or None
    | "DecodeEvents" / "DecodeProfiles"   -> (shard, [(Item, watermark, batch), ...]): a
                                             bundle's items grouped by their customer's shard,
                                             keyed; dead letters to their own output
    | "MergeInputs"                       Flatten: both reach the same keyed DoFn
    | "PerCustomer"                       stateful DoFn over wire.KeyedCore, routed by tag;
                                          payload requests and outcomes out
    | "KeyByTrigger", "PerTrigger"        the arms stage (transforms/bandit.py), keyed by
                                          trigger type: each request's variant, each
                                          outcome's (pipelines/arms.py, beam_arms.py)
    | "Compose"                           stateless: PayloadRequest -> EmailPayload
                                          (beam_arms.py)
    | "Write<Sink>"                       sinks[PAYLOAD | AUDIT | DEAD_LETTER | FEATURES |
                                          OUTCOME]

Items the core drops (duplicates, events of erased customers) are counted, not output: the
run's Tally ("dropped:<reason>"). `run_replay(items, settings, out_dir)` (`personalize replay
--runner direct`) writes the reference runner's files (pipelines/outputs.py); the Kafka job is
pipelines/beam_kafka.py, the sinks pipelines/beam_sinks.py.

PerCustomer's Beam key is one of SHARDS shards of the customers: a table of their pickled
states and earliest wakes, one timer at the earliest of them (pipelines/keyed.py). A timer
firing at t wakes the shard's due customers at t, or at the source's safe watermark when it is
later (END_OF_TIME once the input has ended). Each item is judged late against the watermark
of its own partition it came with. Why shards, why the safe watermark, and why the outputs are
those of the reference runner: docs/beam-topology.md.
"""

from __future__ import annotations

import gc
import logging
import operator
import pickle
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam import typehints
from apache_beam.coders import Coder, VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipelines import wire
from pipelines.beam_local import Flow, KafkaRecord, Local, flow, tally, wall_ms
from pipelines.beam_sinks import SINKS, file_sinks
from pipelines.common import build_core
from pipelines.keyed import StateCache, add_counts, next_timer
from pipelines.outputs import OutputFiles
from pipelines.wire import CHANGES, EVENTS, PROFILES
from transforms.catalog_changes import CatalogChange
from transforms.clock import END_OF_TIME, replay_clock, source_partition
from transforms.core import Core
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    DROPPED,
    FEATURES,
    OUTCOME,
    PAYLOAD,
    CustomerProfile,
    DeadLetter,
    Item,
    event_time,
)
from transforms.product_stage import interest_of, product_of
from transforms.settings import CoreSettings, Settings
from transforms.state import CustomerState

# Our DoFns' annotations are strings (PEP 563): Beam logs one INFO line per hint it reads.
logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)

# Replays hand the runner this many items per TestStream event (then the watermark): the
# watermark may lag the reference's between events without changing any output (see above).
REPLAY_BATCH = 1000
_LAST_TIMER_MS = GlobalWindow().max_timestamp().micros // 1000
_MIN_MS = MIN_TIMESTAMP.micros // 1000
_GLOBAL_WINDOWS = (GlobalWindow(),)
# (shard, [(Item, watermark, batch), ...]): typed so the keyed state gets a deterministic key
# coder.
Keyed = typehints.Tuple[int, typehints.Any]
_STEP = {PAYLOAD: "Payloads", AUDIT: "Audit", DEAD_LETTER: "DeadLetters", FEATURES: "Features",
         OUTCOME: "Outcomes"}
DROPPED_PREFIX = f"{DROPPED}:"
PRODUCTS = "products"   # Decode's output of the items for the product stage (beam_products)
# Unpickled customer states PerCustomer keeps beside Beam's state (StateCache): about 7 KB each
# in memory; a customer past the limit is unpickled when next read.
STATE_CACHE = 20_000
# Beam keys of PerCustomer: the customers are spread over this many (shard_of). Fewer keys cost
# the DirectRunner less per bundle; each write copies a shard's table (customers / SHARDS
# entries). 4 to 64 run alike on the benchmark's 4k customers, 256 and more are slower.
SHARDS = 32


# ------------------------------------------------------------------------------ the topology


def build_pipeline(
    p: beam.Pipeline,
    events: beam.PCollection,
    profiles: beam.PCollection,
    sinks: Mapping[str, beam.PTransform],
    settings: Settings,
    core: Core | None = None,
    local: Local | None = None,
    changes: beam.PCollection | None = None,
) -> dict[str, beam.PCollection]:
    """Wire the topology from the two input PCollections to `sinks` (PTransforms by output
    kind: PAYLOAD, AUDIT, DEAD_LETTER, FEATURES, OUTCOME); returns the routed PCollections by kind.
    `core` defaults to build_core(settings); `local` holds the run's shared objects
    (beam_kafka.Local) when the sinks use some too. With `changes` (catalog changes, as the
    events), the product stage runs before PerCustomer (pipelines/beam_products.py); not with
    core.catalog_signals false: then changes are only decoded, each a dead letter."""
    local = local or Local()
    if core is not None:
        local.put("core", core)
    products = changes is not None and settings.core.catalog_signals
    decoded_events = events | "DecodeEvents" >> beam.ParDo(
        Decode(EVENTS, settings.core, local, products)).with_output_types(Keyed).with_outputs(
            DEAD_LETTER, PRODUCTS, main="items")
    decoded_profiles = profiles | "DecodeProfiles" >> beam.ParDo(
        Decode(PROFILES, settings.core, local)).with_output_types(Keyed).with_outputs(
            DEAD_LETTER, main="items")
    inputs = [decoded_events.items, decoded_profiles.items]
    dead = [decoded_events[DEAD_LETTER], decoded_profiles[DEAD_LETTER]]
    if changes is not None:
        decoded_changes = changes | "DecodeChanges" >> beam.ParDo(
            Decode(CHANGES, settings.core, local)).with_output_types(Keyed).with_outputs(
                DEAD_LETTER, main="items")
        if products:
            from pipelines.beam_products import build_product_stage

            signals, product_dead = build_product_stage(decoded_events, decoded_changes, local,
                                                        settings)
            inputs.append(signals)
            dead += product_dead
        else:    # core.catalog_signals false: wire.admit made each change a dead letter
            dead.append(decoded_changes[DEAD_LETTER])
    routed = (
        tuple(inputs)
        | "MergeInputs" >> beam.Flatten()
        | "PerCustomer" >> beam.ParDo(PerCustomer(local, settings)).with_outputs(
            *SINKS, main="unused")
    )
    outputs = {kind: routed[kind] for kind in (AUDIT, FEATURES)}
    from pipelines.beam_arms import build_arms_stage

    outputs.update(build_arms_stage(routed, local, settings))
    outputs[DEAD_LETTER] = (
        (*dead, routed[DEAD_LETTER])
        | "MergeDeadLetters" >> beam.Flatten()
    )
    for kind in SINKS:
        if kind not in sinks:
            raise ValueError(f"build_pipeline: no sink for {kind!r}")
        outputs[kind] | f"Write{_STEP[kind]}" >> sinks[kind]
    return outputs


class Decode(beam.DoFn):
    """(record, watermark, now, batch) -> (shard, [(Item, watermark, batch), ...]): a
    bundle's items grouped by the shard of their customer (shard_of), in arrival order, output
    when the bundle ends; dead letters on DEAD_LETTER as they come."""

    def __init__(self, source: str, settings: CoreSettings, local: Local,
                 products: bool = False) -> None:
        self.source = source
        self.settings = settings
        self.local = local
        # Items for the product stage also go out on PRODUCTS, by product shard (counted as
        # routed with their batch, as beam_products.PerProduct counts them stepped).
        self.products = products

    def start_bundle(self) -> None:
        """Count this bundle's records and items per batch (the run's Flow); group its items."""
        self.counts: dict[int, list[int]] = {}
        self.groups: dict[int, list[Any]] = {}   # shard -> [earliest element timestamp, items]
        self.product_groups: dict[int, list[Any]] = {}  # the same, by product shard
        self.dead = 0                            # dead letters to a sink that reports writes
        self.report_dead = DEAD_LETTER in flow(self.local).reporting

    def finish_bundle(self) -> Iterator[Any]:
        """Add the counts to the run's Flow (the dead letters emitted first), then output the
        groups, each stamped with its earliest item's timestamp: that holds the watermark
        downstream as the items did."""
        if self.counts:
            f = flow(self.local)
            if self.dead:
                f.emit(self.dead)
            for batch, (decoded, routed) in self.counts.items():
                if batch is not None:     # None: a source that does not count (tests)
                    f.add(batch, decoded=decoded, routed=routed)
        for shard, (stamp, items) in self.groups.items():
            yield WindowedValue((shard, items), stamp, _GLOBAL_WINDOWS)
        for shard, (stamp, items) in self.product_groups.items():
            yield TaggedOutput(PRODUCTS, WindowedValue((shard, items), stamp, _GLOBAL_WINDOWS))

    def process(self, element: tuple[Any, int | None, int, int],
                stamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
                ) -> Iterator[Any]:
        """Decode a Kafka record (or take a file's item), then check it against the wall
        clock at its receipt (future timestamps)."""
        record, watermark, now, batch = element
        counts = self.counts.get(batch)
        if counts is None:
            counts = self.counts[batch] = [0, 0]
        counts[0] += 1
        if isinstance(record, KafkaRecord):
            item = wire.decode(self.source, record.value, record.topic, record.partition,
                               record.offset, self.settings, record.received_at)
        else:
            item = record
        if not isinstance(item, DeadLetter):
            item = wire.admit(item, self.settings, now)
        if isinstance(item, DeadLetter):
            self.dead += self.report_dead
            yield TaggedOutput(DEAD_LETTER, item)
            return
        counts[1] += 1
        if self.source == CHANGES:
            _group(self.groups, shard_of(item.product_id), stamp, (item, watermark, batch))
            return
        _group(self.groups, shard_of(item.customer_id), stamp, (item, watermark, batch))
        if self.products:
            pid = product_of(item)
            if pid is not None:
                counts[1] += 1
                _group(self.product_groups, shard_of(pid), stamp,
                       (interest_of(item), watermark, batch))


def _group(groups: dict[int, list[Any]], shard: int, stamp: Timestamp, entry: Any) -> None:
    """Add `entry` to its shard's group: [earliest element timestamp, entries]."""
    group = groups.get(shard)
    if group is None:
        groups[shard] = [stamp, [entry]]
    else:
        if stamp < group[0]:
            group[0] = stamp
        group[1].append(entry)


def shard_of(customer_id: str) -> int:
    """The Beam key PerCustomer keeps `customer_id`'s state under (stable across runs)."""
    return zlib.crc32(customer_id.encode()) % SHARDS


class _AsIs(Coder):
    """Keeps a value as it is in the DirectRunner's in-memory state. Only for values that are
    never changed once written (PerCustomer writes a new table each time, of bytes), so that a
    bundle the runner retries still reads what the last committed bundle wrote."""

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, encoded: Any) -> Any:
        return encoded

    def is_deterministic(self) -> bool:
        return False


# PerCustomer's state and timer (module level: Beam reads them off the methods' defaults).
# Per shard: customer_id -> (the core's CustomerState pickled, the earliest wake it asked for).
CUSTOMERS = ReadModifyWriteStateSpec("customers", _AsIs())
WAKE_AT = ReadModifyWriteStateSpec("wake_at", VarIntCoder())     # the time WAKE is set to
WAKE = TimerSpec("wake", TimeDomain.WATERMARK)
_CUSTOMERS = beam.DoFn.StateParam(CUSTOMERS)
_WAKE_AT = beam.DoFn.StateParam(WAKE_AT)
_WAKE = beam.DoFn.TimerParam(WAKE)
# customer_id -> (pickled CustomerState, earliest wake or None)
Table = dict[str, tuple[bytes, int | None]]


def _same_bytes(entry: tuple[CustomerState, bytes], raw: bytes | None) -> bool:
    """A cached state is used only if Beam's state holds the very bytes it was written as."""
    return entry[1] is raw or entry[1] == raw


def _state_cache() -> StateCache[tuple[CustomerState, bytes]]:
    return StateCache(STATE_CACHE, _same_bytes)


def _load(cache: StateCache[tuple[CustomerState, bytes]], cid: str,
          raw: bytes | None) -> CustomerState | None:
    """The state pickled to `raw` (None: no state): the cached object if still current
    (keyed.StateCache: no unpickling), else unpickled. A bundle the runner retries after a
    failure finds no entry, or one whose bytes were never committed."""
    entry = cache.take(cid, raw)
    if entry is not None:
        return entry[0]
    return None if raw is None else pickle.loads(raw)  # type: ignore[no-any-return]


def _save(cache: StateCache[tuple[CustomerState, bytes]], cid: str,
          state: CustomerState) -> bytes:
    """`state` pickled, for Beam's state; the object is cached beside its bytes."""
    raw = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
    cache.put(cid, (state, raw))
    return raw


def _timer(t: int | None) -> int | None:
    """A wake as a Beam timer: none past the global window's last timer."""
    return t if t is None or t <= _LAST_TIMER_MS else _LAST_TIMER_MS


class PerCustomer(beam.DoFn):
    """(shard, [(Item, watermark, batch), ...]) -> the core's outputs, tagged by sink.

    Beam's key is a shard of the customers (shard_of), not the customer: the DirectRunner's
    cost per key and bundle (a copy of the key's state and timers, a scan of every key's timers
    after each bundle) then comes once per shard, not once per customer. Each shard holds a
    table of its customers' states and the earliest wake each asked for, and one timer set to
    the earliest of those; when it fires, every customer of the shard due by then is woken.
    """

    # The key of an item (PerProduct: its product).
    key: Callable[[Any], Any] = operator.attrgetter("customer_id")
    cache = "states"                          # the run's StateCache, by this name in Local
    active_counter = "active_customers"       # the Tally counter of keys holding state
    gated = True                              # wakes capped by the SignalGate (not PerProduct)

    def __init__(self, local: Local, settings: Settings) -> None:
        self.local = local
        self.settings = settings

    def make_keyed(self) -> wire.KeyedCore:
        """The run's core (built once per run, shared by every copy of this DoFn)."""
        return wire.KeyedCore(self.local.get("core", lambda: build_core(self.settings)),
                              compose=False)

    def setup(self) -> None:
        """The keyed rules, the run's Flow, state cache and SignalGate (beam_products: the
        arms stage's wakes need it with or without a product stage)."""
        self.keyed = self.make_keyed()
        self.flow = flow(self.local)
        self.reporting = frozenset(self.flow.reporting)
        self.states: StateCache[tuple[CustomerState, bytes]] = self.local.get(
            self.cache, _state_cache)
        from pipelines.beam_products import signal_gate

        self.gate = signal_gate(self.local) if self.gated else None

    def start_bundle(self) -> None:
        """Count items stepped, dropped, and customers whose state appeared or went."""
        self.active = 0
        self.emitted = 0
        self.stepped: dict[int, int] = {}
        self.dropped: dict[str, int] = {}
        self.signal_times: list[int] = []   # signals stepped (beam_products: batch < 0)

    def finish_bundle(self) -> None:
        """Add the counts to the run's Flow (outputs emitted first) and Tally."""
        if self.emitted:
            self.flow.emit(self.emitted)
        for batch, n in self.stepped.items():
            if batch is not None and batch >= 0:
                self.flow.add(batch, stepped=n)
        if self.signal_times and self.gate is not None:
            self.gate.step(self.signal_times)
        if self.active or self.dropped:
            tally(self.local).add({self.active_counter: self.active, **self.dropped})

    def process(
        self, element: tuple[int, list[tuple[Item, int | None, int]]],
        customers: Any = _CUSTOMERS, wake_at: Any = _WAKE_AT, timer: Any = _WAKE,
    ) -> Iterator[TaggedOutput]:
        """A bundle's items of this shard's customers, each stepped in arrival order and
        judged late against the watermark it came with."""
        table: Table = customers.read() or {}
        step = self.keyed.step
        key = self.key
        stepped = self.stepped
        live: dict[str, list[Any]] = {}   # customer_id -> [state before, state, earliest wake]
        routed: wire.Routed = []
        item: Any
        for item, watermark, batch in element[1]:
            stepped[batch] = stepped.get(batch, 0) + 1
            if batch is not None and batch < 0:
                self.signal_times.append(item.occurred_at)
            cid = key(item)
            now = live.get(cid)
            if now is None:
                raw, wake = table.get(cid, (None, None))
                state = _load(self.states, cid, raw)
                now = live[cid] = [state, state, wake]
            state, outputs, counts, wakes = step(now[1], item, watermark)
            now[1] = state
            now[2] = _timer(next_timer(now[2], state, wakes))
            routed.extend(outputs)
            if counts:
                add_counts(self.dropped, counts, DROPPED_PREFIX)
        return self._store(table, live, routed, customers, wake_at, timer, timer_fired=False,
                           shard=element[0])

    @on_timer(WAKE)
    def on_wake(
        self, fired: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        customers: Any = _CUSTOMERS, wake_at: Any = _WAKE_AT, timer: Any = _WAKE,
        shard: Any = beam.DoFn.KeyParam,
    ) -> Iterator[TaggedOutput]:
        """Event time reached the timer: wake every customer of the shard due by then, at the
        timer's time, or later when that is known to be safe (docs/beam-topology.md)."""
        t = fired.micros // 1000
        safe = END_OF_TIME if self.flow.drained() else self.flow.safe_watermark()
        if safe is not None and safe > t:
            t = safe
        if self.gate is not None:  # may be before the timer (beam_products.SignalGate)
            t = self.gate.bound(t)
        table: Table = customers.read() or {}
        wake = self.keyed.wake
        live: dict[str, list[Any]] = {}
        routed: wire.Routed = []
        for cid, (raw, due) in table.items():
            if due is None or due > t:
                continue
            before = _load(self.states, cid, raw)
            state, outputs, counts, wakes = wake(before, t)
            live[cid] = [before, state, _timer(next_timer(due, state, wakes, woke=True))]
            routed.extend(outputs)
            if counts:
                add_counts(self.dropped, counts, DROPPED_PREFIX)
        return self._store(table, live, routed, customers, wake_at, timer, timer_fired=True,
                           shard=shard)

    def _store(
        self, table: Table, live: dict[str, list[Any]], routed: wire.Routed,
        customers: Any, wake_at: Any, timer: Any, timer_fired: bool, shard: Any = None,
    ) -> Iterator[TaggedOutput]:
        """Write a new table with the customers in `live` ([state before, after, earliest
        wake]), keep the timer at the earliest wake of the shard (`timer_fired`: it has just
        fired, so it is not set any more), emit the outputs."""
        if live:
            table = dict(table)          # never change a table once written (see _AsIs)
            for cid, (before, state, earliest) in live.items():
                if state is None:
                    table.pop(cid, None)
                    self.active -= before is not None
                else:
                    table[cid] = (_save(self.states, cid, state), earliest)
                    self.active += before is None
            if table:
                customers.write(table)
            else:
                customers.clear()
        if self.reporting:
            self.emitted += sum(1 for sink, _ in routed if sink in self.reporting)
        if live or timer_fired:
            due = min((w for _, w in table.values() if w is not None), default=None)
            if due is None:
                wake_at.clear()          # a timer still set finds no one due: a no-op
            elif timer_fired or due != wake_at.read():
                timer.set(Timestamp(micros=due * 1000))
                wake_at.write(due)
            if self.gate is not None:    # how far PerTrigger may wake (SignalGate.arms_bound)
                self.gate.customers(shard, due)
        if self.gate is not None:
            self.gate.arms_emitted(routed)
        for sink, record in routed:
            yield TaggedOutput(sink, record)


def streaming_options() -> PipelineOptions:
    """DirectRunner in streaming mode (the BundleBasedDirectRunner: timers, TestStream)."""
    options = PipelineOptions(runner="DirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


def run_to_end(p: beam.Pipeline) -> None:
    """Run `p` until it finishes. Skips the runner-API round trip `with Pipeline()` does on
    the DirectRunner in streaming mode: it pickles every TestStream element, which for a
    replay costs more than running it.

    What the process holds when the run starts (Beam, the core's templates and model: about
    150k objects) is kept out of the cyclic garbage collector's full collections while it runs
    (gc.freeze): these would otherwise walk it again every time the run's own objects (bundles
    in flight, customer states) have grown by a quarter: about 0.3-0.5 s of a 20k-record run
    over Kafka, and 0.1-0.2 s of the benchmark's empty pass-through, which runs through here
    too. It is handed back to the collector at the end."""
    gc.freeze()
    try:
        p.run(test_runner_api=False).wait_until_finish()
    finally:
        gc.unfreeze()


# ------------------------------------------------------------------------------ replay


def replay_stream(items: Iterable[Item | DeadLetter], settings: CoreSettings, flow: Flow,
                  on_item: Any = None, batch: int = REPLAY_BATCH,
                  wall_clock: Callable[[], int] = wall_ms) -> TestStream:
    """A TestStream of `items` in arrival order, as a source would send them.

    Tagged EVENTS / PROFILES (dead letters ride on EVENTS); each element is (item, the
    watermark of its partition just before it, the wall clock at receipt, batch), stamped with
    its event time; the clock is the reference runner's (transforms/clock.py). Every `batch`
    items make a batch of `flow`, followed by the combined watermark reached by then: between
    batches the runner's watermark lags the reference's, which changes when timers fire but no
    output (docs/beam-topology.md).
    """
    clock = replay_clock(settings, wall_clock())
    stream = TestStream(output_tags=[EVENTS, PROFILES, CHANGES])
    pending: dict[str, list[TimestampedValue]] = {EVENTS: [], PROFILES: [], CHANGES: []}
    sent: int | None = None
    number = flow.open_batch()
    size = 0

    def flush() -> None:
        nonlocal sent
        for tag, values in pending.items():
            if values:
                stream.add_elements(values, tag=tag)
                pending[tag] = []
        wm = clock.watermark
        flow.close_batch(number, size, wm)
        if wm is not None and (sent is None or wm > sent):
            sent = wm
            for tag in (EVENTS, PROFILES, CHANGES):
                stream.advance_watermark_to(Timestamp(micros=wm * 1000), tag=tag)

    for item in items:
        if on_item is not None:
            on_item(item)
        item = wire.replayed(item, settings)
        now = wall_clock()
        if isinstance(item, DeadLetter):
            wm = clock.watermark
            stamp = wm if wm is not None else _MIN_MS
            tag = EVENTS
        elif isinstance(item, CatalogChange):
            stamp, tag = item.occurred_at, CHANGES
            partition = source_partition(item.origin, item.product_id,
                                         settings.replay_partitions)
            wm = clock.partition_watermark(partition)
            clock.observe(partition, stamp, now)
        else:
            stamp = event_time(item)
            tag = PROFILES if isinstance(item, CustomerProfile) else EVENTS
            partition = source_partition(item.origin, item.customer_id,
                                         settings.replay_partitions, tag == PROFILES)
            wm = clock.partition_watermark(partition)
            clock.observe(partition, stamp, now)
        element = (item, wm, now, number)
        pending[tag].append(TimestampedValue(element, Timestamp(micros=stamp * 1000)))
        size += 1
        if size == batch:
            flush()
            number, size = flow.open_batch(), 0
    flush()
    flow.end()
    for tag in (EVENTS, PROFILES, CHANGES):
        stream.advance_watermark_to_infinity(tag=tag)
    return stream


def run_replay(
    items: Iterable[Item | DeadLetter], settings: Settings, out_dir: Path, core: Core | None = None
) -> dict[str, Any]:
    """Replay `items` through the Beam topology into out_dir/*.jsonl; returns the summary."""
    local = Local()
    out = OutputFiles(Path(out_dir))
    local.put("files", (out, threading.Lock()))
    try:
        stream = replay_stream(items, settings.core, flow(local), out.count_input)
        p = beam.Pipeline(options=streaming_options())
        inputs = p | "ReadReplay" >> stream
        build_pipeline(p, inputs[EVENTS], inputs[PROFILES], file_sinks(local), settings, core,
                       local, inputs[CHANGES])
        run_to_end(p)
        counts = tally(local).snapshot()
        for name, n in sorted(counts.items()):
            if name.startswith(DROPPED_PREFIX):
                out.summary["dropped"][name[len(DROPPED_PREFIX):]] = n
        out.summary["active_customers_at_end"] = counts.get("active_customers", 0)
        out.close()
        return out.summary
    finally:
        local.close()


