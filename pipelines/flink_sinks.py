"""The Python operators at the Flink topology's sinks, one factory per operator.

    kafka_row_fn(sink)                    sink record -> Row(k, v[, headers]) of its table
    write_features_fn(writer)             FEATURES records -> the feature writer
    tag_fn(kind)                          record -> (kind, record) (a replay's collection)

Each factory defines its class inside it, as pipelines/flink_operators.py's do (pyflink is
imported only when a job is built; cloudpickle ships the class by value).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipelines import wire
from transforms.model import AUDIT, OUTCOME, PAYLOAD


def kafka_row_fn(sink: str) -> Any:
    """The encoder of `sink`'s records to its Kafka table's rows."""
    from pyflink.common import Row
    from pyflink.datastream.functions import MapFunction

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
            if self.sink == OUTCOME:
                return Row(*wire.outcome_record(record))
            return Row(*wire.dead_letter_record(record))

    return KafkaRow(sink)


def write_features_fn(writer: Any) -> Any:
    """FEATURES records to `writer`."""
    from pyflink.datastream.functions import ProcessFunction

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

    return WriteFeatures(writer)


def tag_fn(kind: str) -> Any:
    """record -> (kind, record)."""
    from pyflink.datastream.functions import MapFunction

    class Tag(MapFunction):
        """record -> (kind, record), for collecting a replay's outputs on one stream."""

        def __init__(self, kind: str) -> None:
            self.kind = kind

        def map(self, record: Any) -> Any:
            return self.kind, record

    return Tag(kind)
