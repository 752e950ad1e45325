"""The job as a PyFlink DataStream topology: a thin adapter over the core (transforms/).

    build_topology(events, profiles, settings, emit_features, emit_counts) -> Outputs
    events, profiles     DataStream of Kafka rows (value, topic, partition, offset, received),
                         or of one replay file's lines (pickled items in arrival order,
                         profiles and dead letters among them; then `profiles` is None)
    | "DecodeEvents" / "DecodeProfiles"      wire.decode + wire.admit in Python; each output
                                             (Row(customer_id, (watermark, Item)), stamp),
                                             dead letters to a side output
    | union, "ItemsWatermarks"               bounded out-of-orderness + idleness
    | keyBy field 0 (Java: no Python key selector operator)
      (the decoders' PRODUCTS side output, with the catalog changes: "ProductsWatermarks",
       keyBy product, "PerProduct": the product stage; its signals are unioned in here)
    | "PerCustomer"                          the core per customer: state in a TTL'd
                                             ValueState, one event-time timer
                                             (pipelines/keyed.py); payload requests out
    | union with PerCustomer's outcomes, keyBy trigger type (a Python key selector)
    | "PerTrigger"                           the arms stage (transforms/bandit.py): each
                                             request's variant, each outcome's; ValueState
                                             and one event-time timer per trigger type
    | "Compose"                              stateless map: request -> EmailPayload
    -> payloads (main output), audit / dead letters / features / outcomes (side outputs of
       PerCustomer)

Entry points: `run_kafka(settings, jars, options)` (`personalize run --runner flink`; a
cluster's submission is runners/flink_cluster.py) and `run_replay(items, settings, out_dir)`
(`personalize replay --runner flink`), which writes the reference runner's files
(pipelines/outputs.py). The operators are pipelines/flink_operators.py's (at the sinks,
pipelines/flink_sinks.py's), the Kafka tables and offsets pipelines/flink_kafka.py's.

Each item is judged late against the watermark of its own partition it came with
(transforms/clock.py, the rule of every runner); timers follow the decoder's combined clock;
profiles never move the watermark. Every operator has a stable `.uid()` (savepoints). Why, and
the known limits (idleness with parallelism > 1, the clock after a restore):
docs/flink-topology.md.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import pickle
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.common import changes_topic
from pipelines.flink_kafka import (
    KafkaRead,
    kafka_read,
    partition_offsets,
    row_type,
    sink_ddl,
    source_ddl,
)
from pipelines.flink_operators import (
    ACTIVE,
    ACTIVE_PRODUCTS,
    PRODUCTS,
    compose_fn,
    decode_fn,
    keyed_type,
    per_customer_fn,
    per_trigger_fn,
    side_outputs,
    trigger_key_fn,
)
from pipelines.flink_sinks import kafka_row_fn, tag_fn, write_features_fn
from pipelines.outputs import OutputFiles
from pipelines.wire import CHANGES, EVENTS, PROFILES
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    DROPPED,
    FEATURES,
    OUTCOME,
    PAYLOAD,
    DeadLetter,
    Item,
)
from transforms.settings import Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
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
        "execution.buffer-timeout.interval": f"{f.buffer_timeout} ms",
        "execution.checkpointing.interval": f"{f.checkpoint_interval} ms",
        "execution.checkpointing.mode": f.checkpoint_mode.upper().replace("-", "_"),
        "execution.checkpointing.dir": checkpoint_dir(settings),
        "execution.checkpointing.savepoint-dir": checkpoint_dir(settings) + "-savepoints",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.min-pause": f"{min(f.checkpoint_interval // 2, 1000)} ms",
        "state.backend.type": f.state_backend,
        # RocksDB uploads only the files a checkpoint adds (the heap backend writes all state
        # at every checkpoint, which at low checkpoint intervals is most of their cost).
        "execution.checkpointing.incremental": str(f.state_backend == "rocksdb").lower(),
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


# ------------------------------------------------------------------------------ the topology


@dataclass
class Outputs:
    """The topology's output streams (pickled records), by sink."""

    payloads: Any
    audit: Any
    dead_letters: Any          # from the decoders and the core (late), one stream
    features: Any | None       # only when a feature writer or a collector asked for them
    counts: Any | None         # (reason, n) of dropped items, and ACTIVE deltas (replays)
    outcomes: Any = None       # attributed outcomes (transforms/attribution.py)


def watermarked(ds: Any, settings: Settings, uid: str, name: str, idle: bool = True) -> Any:
    """(Row(customer_id, (watermark, Item)), time) -> Row(customer_id, (watermark, Item))
    stamped with its time, with watermarks: bounded out-of-orderness and idleness.

    The Java half of PyFlink's assign_timestamps_and_watermarks (the time was already taken in
    the decoder, so no Python timestamp assigner runs), with our own uids.
    """
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    eventtime = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.eventtime
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(settings.core.max_out_of_orderness))
    if idle:  # (`idle` False: never marked idle, see build_topology's product stage)
        strategy = strategy.with_idleness(Duration.of_millis(settings.flink.idleness))
    j_stamped = ds._j_data_stream.assignTimestampsAndWatermarks(
        strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner()))
    j_stamped.uid(f"{uid}-watermarks").name(f"{name}Watermarks")
    j_items = j_stamped.map(eventtime.RemoveTimestampMapFunction(),
                            keyed_type().get_java_type_info())
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
                   read: KafkaRead | None = None, changes: Any | None = None) -> Outputs:
    """Wire decode -> watermarks -> PerCustomer over the input streams.

    `events` and `profiles` carry Kafka rows (Row(value, topic, partition, offset)); with
    `profiles` None, `events` carries a replay file's lines, events and profiles in arrival
    order through one decoder (so the whole input shares one clock, as in the reference runner).
    `read` tells the Kafka decoders where the read of each partition ends, if it is bounded.
    `changes`: Kafka rows of catalog changes (a replay file's lines carry them among the rest).
    """
    from pyflink.common import Types

    tags = side_outputs()
    pickled = Types.PICKLED_BYTE_ARRAY()
    stamped = Types.TUPLE([keyed_type(), Types.LONG()])
    # The product stage (transforms/product_stage.py) only where catalog changes can arrive: a
    # replay file may carry them; a Kafka job that reads no changes topic (none, or
    # core.catalog_signals false) would keep every product's interested customers for nothing.
    products = settings.core.catalog_signals and (profiles is None or changes is not None)
    if profiles is None:
        decoded = events.process(decode_fn(None, settings, None, products),
                                 output_type=stamped) \
            .uid("decode-replay").name("DecodeReplay")
        items = decoded
        dead = [decoded.get_side_output(tags[DEAD_LETTER])]
    else:
        dec_events = events.process(decode_fn(EVENTS, settings, read, products),
                                    output_type=stamped).uid("decode-events").name("DecodeEvents")
        dec_profiles = profiles.process(decode_fn(PROFILES, settings, read),
                                        output_type=stamped) \
            .uid("decode-profiles").name("DecodeProfiles")
        items = dec_events.union(dec_profiles)
        dead = [dec_events.get_side_output(tags[DEAD_LETTER]),
                dec_profiles.get_side_output(tags[DEAD_LETTER])]
        decoded = dec_events
    # The product stage: watermarks over the stamps the events' decoder gave its items, so its
    # timers follow the items' clock (catalog changes from Kafka carry NO_STAMP, as profiles:
    # they never move it); its signals are unioned into PerCustomer's input, whose watermark
    # is then the minimum of both. In a bounded read the product stream is never marked idle:
    # idle, it would be left out of that minimum, and the end of the items' input could wake
    # every customer before PerProduct's last signals.
    bounded = profiles is None or (read is not None and read.stop is not None)
    product_items: Any = decoded.get_side_output(tags[PRODUCTS]) if products else None
    if changes is not None:
        dec_changes = changes.process(decode_fn(CHANGES, settings, read, products),
                                      output_type=stamped) \
            .uid("decode-changes").name("DecodeChanges")
        if products:
            product_items = product_items.union(dec_changes.get_side_output(tags[PRODUCTS]))
        dead.append(dec_changes.get_side_output(tags[DEAD_LETTER]))
    customer_items = watermarked(items, settings, "items", "Items")
    per_product = None
    if products:
        per_product = (
            by_customer(watermarked(product_items, settings, "products", "Products",
                                    idle=not bounded))
            .process(per_customer_fn(settings, False, emit_counts, products=True),
                     output_type=keyed_type())
            .uid("per-product").name("PerProduct")
        )
        dead.append(per_product.get_side_output(tags[DEAD_LETTER]))
        customer_items = customer_items.union(per_product)
    per_customer = (
        by_customer(customer_items)
        .process(per_customer_fn(settings, emit_features, emit_counts), output_type=pickled)
        .uid("per-customer").name("PerCustomer")
    )
    # The arms stage (transforms/bandit.py): requests and outcomes keyed by trigger type.
    per_trigger = (
        per_customer.union(per_customer.get_side_output(tags[OUTCOME]))
        .key_by(trigger_key_fn(), key_type=Types.STRING())
        .process(per_trigger_fn(settings, emit_counts), output_type=pickled)
        .uid("per-trigger").name("PerTrigger")
    )
    payloads = per_trigger.map(compose_fn(settings), output_type=pickled) \
        .uid("compose").name("Compose")
    dead.append(per_customer.get_side_output(tags[DEAD_LETTER]))
    counts = None
    if emit_counts:
        counted = [per_trigger] if per_product is None else [per_trigger, per_product]
        counts = per_customer.get_side_output(tags[DROPPED]).union(
            *(op.get_side_output(tags[DROPPED]) for op in counted))
    return Outputs(
        payloads=payloads,
        audit=per_customer.get_side_output(tags[AUDIT]),
        dead_letters=dead[0].union(*dead[1:]),
        features=per_customer.get_side_output(tags[FEATURES]) if emit_features else None,
        counts=counts,
        outcomes=per_trigger.get_side_output(tags[OUTCOME]),
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
    changes = None
    if reads_changes(settings, read):
        t_env.execute_sql(source_ddl("changes_in", k.catalog_changes_topic, settings, read))
        changes = t_env.to_data_stream(t_env.sql_query(f"SELECT {columns} FROM changes_in"))
    out = build_topology(events, profiles, settings, emit_features=feature_writer is not None,
                         read=read, changes=changes)
    statements = t_env.create_statement_set()
    for sink, stream, topic in (
        (PAYLOAD, out.payloads, k.payloads_topic),
        (AUDIT, out.audit, k.audit_topic),
        (DEAD_LETTER, out.dead_letters, k.dead_letters_topic),
        (OUTCOME, out.outcomes, k.outcomes_topic),
    ):
        table = f"{sink}_out"
        headers = sink == PAYLOAD
        t_env.execute_sql(sink_ddl(table, topic, settings, headers))
        rows = stream.map(kafka_row_fn(sink), output_type=row_type(headers)) \
            .uid(f"encode-{sink}").name(f"Encode{sink.title().replace('_', '')}")
        statements.add_insert(table, t_env.from_data_stream(rows))
    if feature_writer is not None:
        assert out.features is not None  # asked for with emit_features
        written = out.features.process(write_features_fn(feature_writer)) \
            .uid("write-features").name("WriteFeatures")
        discard(written, "features-done", "FeaturesDone")
    statements.attach_as_datastream()
    return statements


def reads_changes(settings: Settings, read: KafkaRead) -> bool:
    """Whether the job reads the catalog-changes topic: with core.catalog_signals, when it
    exists at job start (the services create it) and, for a read bounded by stop offsets,
    when those name it."""
    topic = changes_topic(settings)
    if topic is None:
        return False
    if isinstance(read.stop, dict):
        return any(t == topic for t, _ in read.stop)
    parts, _, _ = partition_offsets(settings, topic, read)
    return bool(parts)


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

    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path)).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "ReplayFile") \
        .uid("replay-file").set_parallelism(1)
    out = build_topology(lines, None, settings, emit_features=True, emit_counts=True)
    assert out.features is not None and out.counts is not None  # both asked for
    pickled = Types.PICKLED_BYTE_ARRAY()
    tagged = [
        stream.map(tag_fn(kind), output_type=pickled).uid(f"tag-{kind}").name(f"Tag-{kind}")
        for kind, stream in ((PAYLOAD, out.payloads), (AUDIT, out.audit),
                             (DEAD_LETTER, out.dead_letters), (FEATURES, out.features),
                             (DROPPED, out.counts), (OUTCOME, out.outcomes))
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
                    if reason == ACTIVE_PRODUCTS:
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
