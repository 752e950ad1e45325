"""Benchmarks of the PyFlink topology, Kafka to Kafka, on the local mini-cluster (thread mode by
default; `--set flink.execution_mode=process` to compare). Reused by `personalize bench`.

    throughput(settings, events)  -> {"topology_eps", "passthrough_eps", "ratio", ...}
        The shipped rees46 sample (Avro) is produced once to fresh topics; the topology and an
        empty PyFlink pass-through (same Kafka tables, one Python map, same exactly-once sink)
        each read it twice, bounded: all of it, and its first 5%. Rate = the difference in
        records over the difference in wall time, so job start-up (JVM, Python interpreters)
        cancels out. Target: topology >= 0.5 x pass-through (DESIGN.md section 7). On Linux
        also the CPU seconds the mini-cluster (JVM and any Python workers) spent per record, by
        the same difference (`*_cpu_us`; `cpu_ratio` = pass-through / topology CPU per record):
        on a shared machine wall-time rates swing with the load, CPU per record much less.
        Between the two, the keyed floor (`floor_eps`, `floor_ratio` = floor / pass-through):
        the same I/O keyed by the Kafka record key into one Python KeyedProcessFunction that
        only reads and writes a ValueState and registers and fires a timer per record: what
        the keyed contract costs in PyFlink before any decoding or rule runs. Then the fused
        bound (`fused_eps`, `fused_ratio`): the floor's I/O, keying and timing with one Python
        keyed operator that decodes and runs PerCustomer, Compose chained after it
        (`_fused_job`): it does less than the topology, so no topology that decodes and runs
        the rules in Python beats it. Last, the topology again with a catalog-changes topic of
        the run's own to read (`products_eps`; empty, created by `with_catalog`), so with the
        product stage (`topology_eps` is a deployment without a catalog stream).

    latency(settings, rate, seconds, catalog=False) -> {"browse_p50_ms", "browse_p99_ms", ...}
        An unbounded job (with `catalog`, one that also has a catalog-changes topic to read,
        so the product stage runs); background traffic at `rate` events/s stamped with the
        wall clock, and after LATENCY_WARMUP_S of it alone, JOURNEYS_PER_S times a second one browse
        journey (five views) and one abandoned cart from fresh customers: 300 of each in 60 s,
        so that the p99 is not simply the largest sample (the largest is reported too,
        `*_max_ms`). Browse latency: 5th view produced -> payload consumed (read_committed).
        Cart latency: deadline (add_to_cart time + cart_delay) -> payload consumed. Latency
        run settings (LATENCY_SETTINGS, then the caller's overrides; the result's "settings"
        names what ran): max_out_of_orderness
        200 ms (the core only processes an event once the watermark passes it, so latency >=
        max_out_of_orderness), cart_delay 5 s, checkpoints every 300 ms (exactly-once payloads
        become visible when the checkpoint commits their transaction: at 500 ms, p99 was 0.9-1.1
        s with 200-300 samples), watermark interval 50 ms, network buffers sent after at most
        10 ms (buffer_timeout; Flink's default 100 ms is up to that per hop between tasks),
        idleness 1 s. These are what a user who wants low latency would run with;
        docs/flink-deploy.md has the trade-offs.

    python -m runners.bench.flink [--events N] [--seconds S] [--set section.key=value ...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from runners import SHIPPED_DATA as DATA
from runners.services import kafka_connector_jar
from transforms.model import (
    ADD_TO_CART,
    EMAIL_CHANNEL,
    PRODUCT_VIEW,
    BehaviourEvent,
    CustomerProfile,
    Product,
)
from transforms.settings import DAY, Settings, load_settings

# Journeys of each kind started per second in the latency run: a p99 needs a few hundred
# samples (with 60, it is the largest one or two).
JOURNEYS_PER_S = 5.0
# Seconds of background traffic before the first journey: the job's first seconds under load
# (JIT compilation, first checkpoints) took 0.7-1.2 s per browse payload, a start-up cost that
# is not the steady-state latency being measured.
LATENCY_WARMUP_S = 10.0
BACKGROUND = 20_000  # background customers of the latency run
LATENCY_SETTINGS = (
    "core.max_out_of_orderness=200ms",
    "core.cart_delay=5s",
    "flink.checkpoint_interval=300ms",
    "flink.watermark_interval=50ms",
    "flink.buffer_timeout=10ms",
    "flink.idleness=1s",
)


def bench_settings(base: Settings, extra: Iterable[str] = ()) -> Settings:
    """`base` with fresh topics, consumer group and transactional ids (one bench run)."""
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    pairs = [f"kafka.group_id={tag}", f"flink.transactional_id_prefix={tag}"]
    # The catalog-changes topic too: a job reads it (and builds the product stage) when it
    # exists, and the broker's default one is not this run's. Not created by produce_items:
    # `with_catalog` creates it (empty) for the runs that measure the product stage.
    for name in ("events", "profiles", "payloads", "audit", "dead_letters", "outcomes",
                 "catalog_changes"):
        pairs.append(f"kafka.{name}_topic={tag}-{name}")
    return base.with_overrides([*pairs, *extra])


def _producer(settings: Settings) -> Any:
    from kafka import KafkaProducer

    from pipelines.connections import kafka_client_config

    return KafkaProducer(**kafka_client_config(settings.kafka), linger_ms=5,
                         batch_size=256 * 1024, acks=1)


# The bench's input topics keep what they are given: their records carry the items' event
# times as Kafka timestamps (years back for the shipped sample), which time-based retention
# and segment rolling would otherwise act on at once.
KEEP_ALL = {"retention.ms": "-1", "segment.ms": str(10 * 365 * DAY)}


def with_catalog(settings: Settings) -> None:
    """Create the run's catalog-changes topic (empty): jobs started after this read it, so they
    build the product stage (pipelines/flink_pipeline.py), as a deployment with a catalog
    stream does; its interest bookkeeping runs for every product event even with no change."""
    from runners.services import ensure_topics

    ensure_topics(settings.kafka, [settings.kafka.catalog_changes_topic], 1, configs=KEEP_ALL)


def produce_items(settings: Settings, items: Iterable[Any]) -> int:
    """Create the bench topics and write `items` (events and profiles, Avro), keyed by customer
    and with their event time as the Kafka record timestamp (the keyed floor and the fused
    bound take Flink's event time from it; the topology reads event time from the Avro)."""
    from runners.services import ensure_topics
    from transforms.codec import encode_event, encode_profile
    from transforms.model import CustomerProfile, DeadLetter, event_time

    k = settings.kafka
    ensure_topics(k, [k.payloads_topic, k.audit_topic, k.dead_letters_topic, k.outcomes_topic,
                      f"{k.payloads_topic}-passthrough"], k.partitions)
    ensure_topics(k, [k.events_topic], k.partitions, configs=KEEP_ALL)
    ensure_topics(k, [k.profiles_topic], 1, configs=KEEP_ALL)
    producer = _producer(settings)
    n = 0
    for item in items:
        if isinstance(item, DeadLetter):
            continue
        if isinstance(item, CustomerProfile):
            topic, value = k.profiles_topic, encode_profile(item)
        else:
            topic, value = k.events_topic, encode_event(item)
        producer.send(topic, key=item.customer_id.encode(), value=value,
                      timestamp_ms=event_time(item))
        n += 1
    producer.flush()
    producer.close()
    return n


# ------------------------------------------------------------------------------ throughput


def _passthrough_job(env: Any, settings: Settings, read: Any) -> None:
    """Kafka tables in -> one Python map -> Kafka table out: PyFlink's floor for this I/O."""
    from pyflink.common import Row
    from pyflink.table import StreamTableEnvironment

    from pipelines.flink_kafka import row_type, sink_ddl, source_ddl

    k = settings.kafka
    t_env = StreamTableEnvironment.create(env)
    statements = t_env.create_statement_set()
    sink = f"{k.payloads_topic}-passthrough"
    t_env.execute_sql(sink_ddl("passthrough_out", sink, settings, headers=False))
    for table, topic in (("events_in", k.events_topic), ("profiles_in", k.profiles_topic)):
        t_env.execute_sql(source_ddl(table, topic, settings, read))
        rows = t_env.to_data_stream(t_env.from_path(table)).map(
            lambda r: Row(None, bytes(r[0])), output_type=row_type(False)
        ).name(f"PassThrough-{table}")
        statements.add_insert("passthrough_out", t_env.from_data_stream(rows))
    statements.attach_as_datastream()


def _keyed_floor_job(env: Any, settings: Settings, read: Any) -> None:
    """The least any adapter of the keyed contract (DESIGN.md section 3) does per record, and
    nothing else: the same Kafka tables in, but keyed by the record key (the producers key by
    customer) with Kafka's record timestamps as event time, so that keyBy and the watermarks
    need no Python operator -> one Python KeyedProcessFunction that reads and writes the key's
    ValueState (pickled, with the topology's TTL) and registers an event-time timer per
    record, and when the timer fires reads and clears the state -> the record's bytes to the
    same exactly-once Kafka table out. No decoding, no rules: the ceiling of a keyed, stateful
    PyFlink job over this I/O, between the pass-through and the topology."""
    from pyflink.common import Row, Types
    from pyflink.datastream.functions import KeyedProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor
    from pyflink.table import StreamTableEnvironment
    from pyflink.table.expressions import col

    from pipelines.flink_kafka import row_type, sink_ddl, source_ddl
    from pipelines.flink_operators import state_ttl
    from pipelines.flink_pipeline import by_customer

    ttl = state_ttl(settings)

    class Floor(KeyedProcessFunction):
        def open(self, runtime_context: Any) -> None:
            descriptor = ValueStateDescriptor("floor", Types.PICKLED_BYTE_ARRAY())
            descriptor.enable_time_to_live(ttl)
            self.state = runtime_context.get_state(descriptor)

        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            self.state.value()
            self.state.update(value)
            timers = ctx.timer_service()
            timers.register_event_time_timer(timers.current_watermark() + 1)
            yield Row(None, value)

        def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
            self.state.value()
            self.state.clear()
            return iter(())

    k = settings.kafka
    t_env = StreamTableEnvironment.create(env)
    statements = t_env.create_statement_set()
    t_env.execute_sql(sink_ddl("floor_out", f"{k.payloads_topic}-passthrough", settings,
                               headers=False))
    streams = []
    for table, topic in (("events_in", k.events_topic), ("profiles_in", k.profiles_topic)):
        t_env.execute_sql(source_ddl(table, topic, settings, read, keyed=True))
        streams.append(t_env.to_append_stream(
            t_env.from_path(table).select(col("k"), col("value")),
            Types.ROW([Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])))
    keyed = by_customer(streams[0].union(streams[1]), Types.PRIMITIVE_ARRAY(Types.BYTE()))
    rows = keyed.process(Floor(), output_type=row_type(False)).name("KeyedFloor")
    statements.add_insert("floor_out", t_env.from_data_stream(rows))
    statements.attach_as_datastream()


def _fused_job(env: Any, settings: Settings, read: Any) -> None:
    """The topology's next structural step, as far as a benchmark can take it: the keyed
    floor's I/O (keyed in Java by the Kafka record key, Kafka's record timestamps, which
    produce_items sets to the event times, as Flink's event time), and one Python keyed
    operator that decodes each record and then is PerCustomer (the core's step / wake, its
    state and timer), with Compose and the payloads' Kafka encoding chained after it on the
    same thread. Not the topology: no per-partition clock, so no lateness against the
    watermark; the profiles' timestamps move the watermark; audit and dead letters leave on
    side outputs that are discarded. It does less than the topology, never more: an upper
    bound for any topology that decodes and runs the rules in Python."""
    from pyflink.common import Types
    from pyflink.table import StreamTableEnvironment

    from pipelines import wire
    from pipelines.flink_kafka import row_type, sink_ddl, source_ddl
    from pipelines.flink_operators import (
        compose_fn,
        per_customer_fn,
        side_outputs,
        wall_ms,
    )
    from pipelines.flink_pipeline import by_customer, discard
    from pipelines.flink_sinks import kafka_row_fn
    from transforms.model import AUDIT, DEAD_LETTER, OUTCOME, PAYLOAD, DeadLetter

    tags = side_outputs()
    per_customer: Any = type(per_customer_fn(settings, False, False))
    core_settings = settings.core

    class DecodingPerCustomer(per_customer):  # type: ignore[misc]
        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            raw, source = value[0], value[1]
            item = wire.decode(source, bytes(raw), source, 0, 0, core_settings, wall_ms())
            if not isinstance(item, DeadLetter):
                yield from super().process_element((None, item), ctx)

    k = settings.kafka
    t_env = StreamTableEnvironment.create(env)
    statements = t_env.create_statement_set()
    t_env.execute_sql(sink_ddl("fused_out", f"{k.payloads_topic}-passthrough", settings,
                               headers=True))
    value_type = Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING()])
    streams = []
    for table, topic, source in (("events_in", k.events_topic, wire.EVENTS),
                                 ("profiles_in", k.profiles_topic, wire.PROFILES)):
        t_env.execute_sql(source_ddl(table, topic, settings, read, keyed=True))
        rows = t_env.sql_query(f"SELECT k, ROW(`value`, '{source}') AS v FROM `{table}`")
        streams.append(t_env.to_append_stream(rows, Types.ROW([Types.STRING(), value_type])))
    keyed = by_customer(streams[0].union(streams[1]), value_type)
    per_customer = keyed.process(DecodingPerCustomer(settings, False, False),
                                 output_type=Types.PICKLED_BYTE_ARRAY()).name("FusedPerCustomer")
    for sink in (AUDIT, DEAD_LETTER, OUTCOME):  # side outputs PerCustomer yields to
        discard(per_customer.get_side_output(tags[sink]), f"fused-{sink}", f"Fused-{sink}")
    payloads = (
        per_customer
        .map(compose_fn(settings), output_type=Types.PICKLED_BYTE_ARRAY()).name("Compose")
        .map(kafka_row_fn(PAYLOAD), output_type=row_type(True)).name("EncodePayload")
    )
    statements.add_insert("fused_out", t_env.from_data_stream(payloads))
    statements.attach_as_datastream()


def proc_table() -> tuple[dict[int, int], dict[int, float]] | None:
    """Every process's parent and CPU seconds (user + system) so far, from /proc; None off
    Linux."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except (OSError, AttributeError, ValueError):
        return None
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    return parent, cpu


def _tree_cpu(root: int) -> float | None:
    """CPU seconds used so far by the processes under `root` (its descendants, not itself):
    the local mini-cluster's JVM and, in process mode, its Python workers. None off Linux."""
    table = proc_table()
    if table is None:
        return None
    parent, cpu = table
    total, found = 0.0, False
    for pid in cpu:
        p = parent.get(pid)
        while p is not None and p != root and p > 1:
            p = parent.get(p)
        if p == root:
            total += cpu[pid]
            found = True
    return total if found else None


def _timed_run(settings: Settings, job: str, records: int,
               cpu: dict[str, float] | None = None) -> float:
    """Wall seconds of one bounded run of `job` over the first `records` records; with `cpu`,
    cpu["s"] gets the CPU seconds the mini-cluster (JVM and Python workers) spent on it."""
    from pipelines.flink_kafka import KafkaRead, stopping_offsets
    from pipelines.flink_pipeline import build_kafka_job, make_env

    read = KafkaRead(from_beginning=True, group_id=f"{settings.kafka.group_id}-{job}-{records}")
    read.stop = stopping_offsets(settings, read, records)
    env = make_env(settings, [kafka_connector_jar(settings)])
    if job in ("topology", "products"):
        build_kafka_job(env, settings, read)
    elif job == "floor":
        _keyed_floor_job(env, settings, read)
    elif job == "fused":
        _fused_job(env, settings, read)
    else:
        _passthrough_job(env, settings, read)
    cpu_before = _tree_cpu(os.getpid())
    start = time.perf_counter()
    env.execute(f"bench-{job}")
    wall = time.perf_counter() - start
    cpu_after = _tree_cpu(os.getpid())
    if cpu is not None and cpu_before is not None and cpu_after is not None:
        cpu["s"] = cpu_after - cpu_before
    return wall


def workload(events: int) -> Iterator[Any]:
    """`events` items of the shipped rees46 sample (profiles synthesized), cycled as often as
    needed: each cycle is shifted by the sample's span + 2 days with new event ids, so it is
    new traffic (no duplicates, no late events) for the same customers."""
    import dataclasses

    from transforms.model import CustomerProfile, DeadLetter, event_time
    from transforms.readers import read_rees46

    sample = [i for i in read_rees46(DATA) if not isinstance(i, DeadLetter)]
    span = max(event_time(i) for i in sample) - min(event_time(i) for i in sample) + 2 * DAY
    n = 0
    for cycle in itertools.count():
        for item in sample:
            if n == events:
                return
            shift = cycle * span
            if isinstance(item, CustomerProfile):
                yield dataclasses.replace(item, updated_at=item.updated_at + shift)
            else:
                yield dataclasses.replace(item, occurred_at=item.occurred_at + shift,
                                          event_id=f"{item.event_id}-{cycle}")
            n += 1


def core_rate(settings: Settings, items: list[Any]) -> float:
    """Items/s of the core alone (the reference runner, no engine, no Kafka) on `items`."""
    from pipelines.common import build_core
    from pipelines.reference import ReferenceRunner

    runner = ReferenceRunner(build_core(settings), lambda output: None)
    start = time.perf_counter()
    for item in items:
        runner.feed(item)
    runner.finish()
    return len(items) / (time.perf_counter() - start)


def throughput(settings: Settings, events: int = 20_000,
               passthrough_events: int = 200_000) -> dict[str, Any]:
    """Events/s of the topology and of the pass-through over the same topics, same run (and of
    the core alone on the topology's input, for scale)."""
    s = bench_settings(settings)
    items = list(workload(max(events, passthrough_events)))
    n = produce_items(s, items)
    result: dict[str, Any] = {"execution_mode": s.flink.execution_mode,
                              "core_eps": round(core_rate(s, items[:events]), 1)}
    _timed_run(s, "passthrough", 100)                   # warm-up: JVM, gateway, interpreters
    # "products": the topology again once the run's catalog-changes topic exists (empty), so
    # with the product stage; "topology" is a deployment without a catalog stream.
    jobs = (("passthrough", min(n, passthrough_events)), ("floor", min(n, passthrough_events)),
            ("fused", events), ("topology", events), ("products", events))
    for job, records in jobs:
        if job == "products":
            with_catalog(s)
        small = max(1, records // 20)
        cpu_small: dict[str, float] = {}
        cpu_full: dict[str, float] = {}
        t_small = _timed_run(s, job, small, cpu_small)
        t_full = _timed_run(s, job, records, cpu_full)
        result[f"{job}_records"] = records
        result[f"{job}_startup_s"] = round(t_small, 1)
        result[f"{job}_full_s"] = round(t_full, 1)
        result[f"{job}_eps"] = round((records - small) / max(t_full - t_small, 1e-3), 1)
        if "s" in cpu_small and "s" in cpu_full:
            # CPU the mini-cluster spent per record (start-up cancels out as for the rates).
            result[f"{job}_cpu_us"] = round(
                (cpu_full["s"] - cpu_small["s"]) / (records - small) * 1e6, 1)
    result["ratio"] = round(result["topology_eps"] / result["passthrough_eps"], 3)
    result["floor_ratio"] = round(result["floor_eps"] / result["passthrough_eps"], 3)
    result["fused_ratio"] = round(result["fused_eps"] / result["passthrough_eps"], 3)
    if "topology_cpu_us" in result and "passthrough_cpu_us" in result:
        # The same ratio from CPU per record: steadier than wall time on a shared machine.
        result["cpu_ratio"] = round(
            result["passthrough_cpu_us"] / max(result["topology_cpu_us"], 1e-3), 3)
    return result


# ------------------------------------------------------------------------------ latency


def profile(t: int, cid: str, email: str) -> CustomerProfile:
    """A consenting customer's CRM profile as of t."""
    return CustomerProfile(customer_id=cid, updated_at=t, email=email, time_zone="UTC",
                           consents={EMAIL_CHANNEL: True})


def view(t: int, pid: str, category: str, cid: str) -> BehaviourEvent:
    """A product view at t."""
    return _event(PRODUCT_VIEW, t, pid, category, cid)


def add(t: int, pid: str, cid: str) -> BehaviourEvent:
    """An add_to_cart at t."""
    return _event(ADD_TO_CART, t, pid, "shoes", cid, quantity=1)


def _event(etype: str, t: int, pid: str, category: str, cid: str, **kw: Any) -> BehaviourEvent:
    return BehaviourEvent(event_id=uuid.uuid4().hex, customer_id=cid, event_type=etype,
                          occurred_at=t, session_id="bench",
                          product=Product(product_id=pid, category=category, brand="b", price=10.0),
                          **kw)


def latency_settings(s: Settings) -> str:
    """The settings that bound trigger latency, as `section.key=value` (milliseconds)."""
    keys = ("core.max_out_of_orderness", "core.cart_delay", "flink.checkpoint_interval",
            "flink.checkpoint_mode", "flink.watermark_interval", "flink.buffer_timeout",
            "flink.idleness", "flink.state_backend")
    return ", ".join(f"{key}={getattr(getattr(s, key.split('.')[0]), key.split('.')[1])}"
                     for key in keys)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 1)


def latency(settings: Settings, rate: float, seconds: float = 30.0,
            overrides: Iterable[str] = (), journeys_per_s: float = JOURNEYS_PER_S,
            warmup: float = LATENCY_WARMUP_S, catalog: bool = False) -> dict[str, Any]:
    """p50/p99 (and max) of browse-intensity (event produced -> payload consumed) and
    cart-abandonment (deadline -> payload consumed) at `rate` background events/s (see the
    module doc), `journeys_per_s` of each kind for `seconds` after `warmup` seconds of the
    background traffic alone, with LATENCY_SETTINGS, then `overrides`, over `settings`; the
    result names the settings used. With `catalog`, the job has a catalog-changes topic to read
    (empty), so it runs the product stage."""
    from kafka import KafkaConsumer

    from pipelines.connections import kafka_client_config
    from pipelines.flink_kafka import KafkaRead
    from pipelines.flink_pipeline import build_kafka_job, make_env
    from transforms.codec import decode_payload, encode_event, encode_profile

    s = bench_settings(settings, [*LATENCY_SETTINGS, *overrides])
    k = s.kafka
    produce_items(s, [])
    if catalog:
        with_catalog(s)
    env = make_env(s, [kafka_connector_jar(s)])
    build_kafka_job(env, s, KafkaRead(from_beginning=True))
    client = env.execute_async("bench-latency")
    produced: dict[str, float] = {}          # browse customer -> wall ms of its 5th view
    deadlines: dict[str, float] = {}         # cart customer -> deadline (wall ms)
    isolation = ("read_committed", "read_uncommitted")
    got: dict[tuple[str, str], list[float]] = {
        (level, kind): []
        for level in isolation for kind in ("browse_intensity", "cart_abandonment")
    }
    stop = threading.Event()

    def consume(level: str) -> None:
        consumer = KafkaConsumer(k.payloads_topic, **kafka_client_config(k),
                                 isolation_level=level, auto_offset_reset="earliest")
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=50).values():
                now = time.time() * 1000
                for r in records:
                    p = decode_payload(r.value)
                    kind = p.trigger.type
                    since = produced if kind == "browse_intensity" else deadlines
                    start = since.get(p.customer_id)
                    if start is not None:
                        got[(level, kind)].append(now - start)
        consumer.close()

    readers = [threading.Thread(target=consume, args=(level,), daemon=True) for level in isolation]
    for reader in readers:
        reader.start()
    producer = _producer(s)
    time.sleep(15)                           # let the job start (Python interpreters, sources)
    tag = k.group_id
    begin = time.time()
    sent = 0
    journey = 0
    next_journey = begin + warmup            # the background traffic alone first
    try:
        while time.time() - begin < warmup + seconds:
            now_s = time.time()
            due = int((now_s - begin) * rate) - sent
            for _ in range(max(due, 0)):
                # Background customers visit in turn, each visit in the next category: they
                # never gather five views of one category within the browse window, so they
                # cannot all fire browse intensity together (with a fixed category per
                # customer they did, on their fifth round, and the job fell behind).
                ev = view(int(time.time() * 1000), f"p{sent % 500}",
                          f"cat{(sent % BACKGROUND + sent // BACKGROUND) % 40}",
                          cid=f"{tag}-bg{sent % BACKGROUND}")
                producer.send(k.events_topic, key=ev.customer_id.encode(), value=encode_event(ev))
                sent += 1
            if now_s >= next_journey:
                next_journey += 1.0 / journeys_per_s
                journey += 1
                t = int(time.time() * 1000)
                b, c = f"{tag}-browse{journey}", f"{tag}-cart{journey}"
                for cid in (b, c):
                    p = profile(t - 1000, cid=cid, email=f"{cid}@example.com")
                    producer.send(k.profiles_topic, key=cid.encode(), value=encode_profile(p))
                for i in range(5):
                    ev = view(t + i, f"s{i}", "shoes", cid=b)
                    producer.send(k.events_topic, key=b.encode(), value=encode_event(ev))
                produced[b] = time.time() * 1000
                ev = add(t, "p1", cid=c)
                producer.send(k.events_topic, key=c.encode(), value=encode_event(ev))
                deadlines[c] = t + s.core.cart_delay
            producer.flush()
            time.sleep(0.01)
        # Keep the watermark moving until the last deadlines have passed.
        tail_end = time.time() + s.core.cart_delay / 1000 + 5
        while time.time() < tail_end:
            ev = view(int(time.time() * 1000), "p0", "cat0", cid=f"{tag}-bg{sent % BACKGROUND}")
            producer.send(k.events_topic, key=ev.customer_id.encode(), value=encode_event(ev))
            sent += 1
            producer.flush()
            time.sleep(1.0 / max(rate, 1))
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=10)
        producer.close()
        client.cancel().result()
    result: dict[str, Any] = {"rate_eps": rate, "seconds": seconds, "warmup_s": warmup,
                              "background_events": sent,
                              "journeys": journey, "topics": f"{tag}-*",
                              "settings": latency_settings(s)}
    for level in isolation:
        for kind, short in (("browse_intensity", "browse"), ("cart_abandonment", "cart")):
            values = got[(level, kind)]
            name = short if level == "read_committed" else f"{short}_uncommitted"
            result[f"{name}_payloads"] = len(values)
            result[f"{name}_p50_ms"] = _percentile(values, 50)
            result[f"{name}_p99_ms"] = _percentile(values, 99)
            result[f"{name}_max_ms"] = round(max(values), 1) if values else None
    return result


def main(argv: list[str] | None = None) -> int:
    """Throughput, then latency at half the topology's throughput; prints both."""
    p = argparse.ArgumentParser(prog="python -m runners.bench.flink", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000, help="topology records")
    p.add_argument("--passthrough-events", type=int, default=200_000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=None, help="latency run rate (default: half "
                   "the measured topology throughput)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="a setting (both runs; in the latency run it overrides LATENCY_SETTINGS)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--catalog", action="store_true", help="latency run with a catalog-changes "
                   "topic to read, so with the product stage")
    args = p.parse_args(argv)
    settings = load_settings(None, os.environ, args.overrides)
    rate = args.rate
    if not args.skip_throughput:
        tp = throughput(settings, args.events, args.passthrough_events)
        print("throughput:", tp, flush=True)
        rate = rate or tp["topology_eps"] / 2
    lat = latency(settings, rate or 200.0, args.seconds, args.overrides, catalog=args.catalog)
    print("latency:", lat, flush=True)
    print("latency settings:", lat["settings"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
