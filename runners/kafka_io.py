"""Kafka consumer helpers shared by the runners (kafka-python), and the record log (producers:
pipelines/connections.open_producer).

    quiet_client_logs()                            kafka-python's INFO chatter off
    topic_sizes(kafka, topics) -> {topic: records} end minus beginning offsets
    consume(kafka, topic, count, timeout_s) -> [ConsumerRecord]

`kafka` is settings.kafka (its security settings apply, pipelines/connections.py), or a bare
bootstrap address for a plaintext broker.

The record log is a file of Kafka records, what `personalize generate --format avro` writes and
`personalize replay --format avro` reads: per record a 4-byte big-endian key length, the key,
a 4-byte value length and the value. Values are Confluent-framed Avro, so the schema id tells
events from profiles, and malformed values (garbage, truncated) survive byte for byte.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pipelines.connections import kafka_client_config
from transforms.settings import KafkaSettings

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord

_LEN = struct.Struct(">I")


def quiet_client_logs() -> None:
    """Keep kafka-python to warnings: it logs every connection at INFO (the CLI's -v keeps it)."""
    logging.getLogger("kafka").setLevel(logging.WARNING)


def topic_sizes(kafka: KafkaSettings | str, topics: Iterable[str]) -> dict[str, int]:
    """How many records each topic holds (sum over partitions of end - beginning offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_client_config(kafka), enable_auto_commit=False)
    try:
        sizes = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = consumer.end_offsets(tps)
            begins = consumer.beginning_offsets(tps)
            sizes[topic] = sum(ends[tp] - begins[tp] for tp in tps)
        return sizes
    finally:
        consumer.close()


def consume(
    kafka: KafkaSettings | str, topic: str, count: int, timeout_s: float = 30.0
) -> list[ConsumerRecord]:
    """The first `count` records of `topic` from the earliest offset (fewer on timeout)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, **kafka_client_config(kafka), auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None,
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records[:count]
    finally:
        consumer.close()


def write_record(fh: BinaryIO, key: bytes, value: bytes) -> None:
    """Append one record to a record log."""
    fh.write(_LEN.pack(len(key)))
    fh.write(key)
    fh.write(_LEN.pack(len(value)))
    fh.write(value)


def read_records(path: str | Path) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each record of a record log; raises ValueError on a truncated file."""
    with Path(path).open("rb") as fh:
        while header := fh.read(4):
            key = _read_exactly(fh, _length(header))
            value = _read_exactly(fh, _length(_read_exactly(fh, 4)))
            yield key, value


def _length(header: bytes) -> int:
    if len(header) != 4:
        raise ValueError("record log truncated in a length")
    length: int = _LEN.unpack(header)[0]
    return length


def _read_exactly(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ValueError(f"record log truncated: wanted {n} bytes, got {len(data)}")
    return data
