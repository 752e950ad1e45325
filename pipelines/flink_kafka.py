"""The Kafka side of the PyFlink job: the read spec, the Kafka tables and the offsets.

    KafkaRead                    how the sources read: from where, until when, which group
    source_ddl / sink_ddl        the Kafka SQL connector's tables (raw values with their origin
                                 in; key, value and headers out)
    partition_offsets            a topic's partitions, where the read starts, where it ends
    stopping_offsets, kafka_read the bounded read of `personalize run` options

Kafka goes through the SQL connector's tables because PyFlink's DataStream KafkaSource hands
Python only the value bytes (no topic / partition / offset for dead letters) and its sink
cannot write headers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipelines.common import changes_topic
from pipelines.connections import flink_kafka_options, kafka_client_config
from transforms.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class KafkaRead:
    """How the Kafka sources read: from where, and until when."""

    from_beginning: bool = False
    # None: unbounded. "latest": the end offsets at start. Else {(topic, partition): offset}.
    stop: str | dict[tuple[str, int], int] | None = None
    group_id: str | None = None


def _props(settings: Settings) -> str:
    return flink_kafka_options(settings.kafka)


def source_ddl(table: str, topic: str, settings: Settings, read: KafkaRead,
               keyed: bool = False) -> str:
    """A Kafka table of raw record values with their origin (topic, partition, offset).

    `keyed` (the benchmarks' keyed floor, runners/bench/flink.py): a table of (record key as
    a string, value) instead, with Kafka's record timestamps as its rowtime and watermarks of
    bounded out-of-orderness, so that keyBy and event-time timers need no Python operator.
    """
    opts = [
        "'connector' = 'kafka'",
        f"'topic' = '{topic}'",
        _props(settings),
        f"'properties.group.id' = '{read.group_id or settings.kafka.group_id}'",
        "'properties.isolation.level' = 'read_committed'",
        "'scan.startup.mode' = 'group-offsets'",
        f"'properties.auto.offset.reset' = '{'earliest' if read.from_beginning else 'latest'}'",
    ]
    if keyed:
        opts += ["'key.format' = 'raw'", "'key.fields' = 'k'", "'value.format' = 'raw'",
                 "'value.fields-include' = 'EXCEPT_KEY'"]
    else:
        opts.append("'format' = 'raw'")
    if read.stop == "latest":
        opts.append("'scan.bounded.mode' = 'latest-offset'")
    elif isinstance(read.stop, dict):
        spec = ";".join(f"partition:{p},offset:{o}" for (t, p), o in sorted(read.stop.items())
                        if t == topic)
        opts += ["'scan.bounded.mode' = 'specific-offsets'",
                 f"'scan.bounded.specific-offsets' = '{spec}'"]
    if keyed:
        ooo = settings.core.max_out_of_orderness
        return (
            f"CREATE TEMPORARY TABLE `{table}` (\n"
            "  `k` STRING,\n"
            "  `value` BYTES,\n"
            "  `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,\n"
            f"  WATERMARK FOR `ts` AS `ts` - INTERVAL '{ooo / 1000}' SECOND\n"
            f") WITH (\n  {', '.join(opts)}\n)"
        )
    return (
        f"CREATE TEMPORARY TABLE `{table}` (\n"
        "  `value` BYTES,\n"
        "  `topic` STRING METADATA VIRTUAL,\n"
        "  `partition` INT METADATA VIRTUAL,\n"
        "  `offset` BIGINT METADATA VIRTUAL,\n"
        "  `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,\n"
        # The record timestamp in epoch ms: the wall clock at receipt (transforms/clock.py).
        "  `received` AS EXTRACT(EPOCH FROM `ts`) * 1000 + EXTRACT(MILLISECOND FROM `ts`)\n"
        f") WITH (\n  {', '.join(opts)}\n)"
    )


def sink_ddl(table: str, topic: str, settings: Settings, headers: bool) -> str:
    """A Kafka table written with key and value as raw bytes (and headers), exactly once when
    the checkpointing mode is exactly_once."""
    f = settings.flink
    exactly_once = f.checkpoint_mode.lower().replace("-", "_") == "exactly_once"
    opts = [
        "'connector' = 'kafka'",
        f"'topic' = '{topic}'",
        _props(settings),
        "'key.format' = 'raw'",
        "'key.fields' = 'k'",
        "'value.format' = 'raw'",
        "'value.fields-include' = 'EXCEPT_KEY'",
        "'sink.partitioner' = 'default'",
        f"'sink.delivery-guarantee' = '{'exactly-once' if exactly_once else 'at-least-once'}'",
        f"'sink.transactional-id-prefix' = '{f.transactional_id_prefix}-{table}'",
        f"'properties.transaction.timeout.ms' = '{f.transaction_timeout}'",
    ]
    columns = ["`k` BYTES", "`v` BYTES"]
    if headers:
        columns.append("`headers` MAP<STRING, BYTES> METADATA")
    return f"CREATE TEMPORARY TABLE `{table}` ({', '.join(columns)}) WITH ({', '.join(opts)})"


def row_type(headers: bool) -> Any:
    """The row type of a Kafka sink table: Row(k, v[, headers])."""
    from pyflink.common import Types

    raw = Types.PRIMITIVE_ARRAY(Types.BYTE())
    if headers:
        return Types.ROW_NAMED(["k", "v", "headers"], [raw, raw, Types.MAP(Types.STRING(), raw)])
    return Types.ROW_NAMED(["k", "v"], [raw, raw])


def stopping_offsets(
    settings: Settings, read: KafkaRead, max_events: int
) -> dict[tuple[str, int], int]:
    """End offsets that make a bounded read of exactly `max_events` records (or all there is),
    from where the consumer group would start, shared round-robin over the partitions."""
    from kafka import KafkaConsumer, TopicPartition

    k = settings.kafka
    consumer = KafkaConsumer(**kafka_client_config(k), group_id=read.group_id or k.group_id,
                             enable_auto_commit=False)
    try:
        topics = [k.events_topic, k.profiles_topic]
        changes = changes_topic(settings)
        if changes is not None and changes in consumer.topics():
            topics.append(changes)   # read when it exists (reads_changes)
        parts = [TopicPartition(t, p) for t in topics
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(parts)
        begins = consumer.beginning_offsets(parts)
        start = {}
        for tp in parts:
            committed = consumer.committed(tp)
            if committed is not None:
                start[tp] = committed
            else:
                start[tp] = begins[tp] if read.from_beginning else ends[tp]
    finally:
        consumer.close()
    stop = dict(start)
    left = max_events
    while left > 0:
        open_parts = [tp for tp in parts if stop[tp] < ends[tp]]
        if not open_parts:
            break
        share = max(1, left // len(open_parts))
        for tp in open_parts:
            n = min(share, ends[tp] - stop[tp], left)
            stop[tp] += n
            left -= n
            if left == 0:
                break
    return {(tp.topic, tp.partition): offset for tp, offset in stop.items()}


def kafka_read(settings: Settings, options: Any) -> KafkaRead:
    """The read of `personalize run` options: --max-events N reads exactly N records (from
    where the group stands), --until-idle reads what the topics hold at start; else unbounded."""
    read = KafkaRead(from_beginning=bool(getattr(options, "from_beginning", False)),
                     group_id=getattr(options, "group_id", None))
    max_events = getattr(options, "max_events", None)
    if max_events is not None:
        read.stop = stopping_offsets(settings, read, max_events)
    elif getattr(options, "until_idle", None) is not None:
        read.stop = "latest"
    return read


def partition_offsets(
    settings: Settings, topic: str, read: KafkaRead | None, consumer: Any = None
) -> tuple[list[int], dict[int, int], dict[int, int]]:
    """The partitions of `topic`, where the job's read of each starts (the group's committed
    offset, else the earliest or latest one) and their end offsets (read_committed). Empty
    if Kafka cannot tell: then the clock falls back on `idleness` alone."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    read = read or KafkaRead()
    own = consumer is None
    try:
        if own:
            consumer = offsets_consumer(settings, read)
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        firsts = consumer.beginning_offsets(tps) if read.from_beginning else ends
        start = {}
        for tp in tps:
            committed = consumer.committed(tp)
            start[tp.partition] = committed if committed is not None else firsts[tp]
        return parts, start, {tp.partition: ends[tp] for tp in tps}
    except (KafkaError, OSError) as exc:
        log.warning("cannot read the offsets of %s: %s", topic, exc)
        return [], {}, {}
    finally:
        if own and consumer is not None:
            consumer.close()


def offsets_consumer(settings: Settings, read: KafkaRead) -> Any:
    """A kafka-python consumer that only asks offsets (of the job's group; it never joins it)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(**kafka_client_config(settings.kafka),
                         group_id=read.group_id or settings.kafka.group_id,
                         enable_auto_commit=False, isolation_level="read_committed",
                         request_timeout_ms=10_000)
