"""The Beam topology's sinks: Kafka topics, the feature writer, a replay's output files.

    kafka_sinks(local, settings) -> {kind: PTransform}   payloads / audit / dead letters /
                                                          outcomes to their topics, features
                                                          to the writer
    file_sinks(local) -> {kind: PTransform}              every kind into the run's OutputFiles
    WriteToKafka(local, kafka, topic, encode, counter)   records -> topic

Kafka sinks share one producer per run and flush it at the end of every bundle, so a bundle's
outputs are on the broker before the runner moves on; a failed send fails the bundle, which
the runner retries (skipping what was delivered: nothing is written twice) and, after its last
retry, fails the pipeline. What they write is reported to the run's Flow (beam_local), which
is what lets the source commit offsets (docs/beam-topology.md).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import apache_beam as beam

from pipelines import wire
from pipelines.beam_local import Local, flow, tally
from pipelines.connections import open_producer
from pipelines.wire import SINKS
from transforms.model import AUDIT, DEAD_LETTER, FEATURES, OUTCOME, PAYLOAD
from transforms.settings import KafkaSettings, Settings

Encoded = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class WriteToKafka(beam.PTransform):
    """PCollection of records -> `topic`, each encoded by `encode` to (key, value[, headers]);
    `counter`: the output kind, which it reports written to the run's Flow."""

    def __init__(self, local: Local, kafka: KafkaSettings, topic: str,
                 encode: Callable[[Any], Encoded], counter: str) -> None:
        super().__init__()
        flow(local).reporting.add(counter)
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
            flow(self.local).written(self.n)
            tally(self.local).add({self.counter: self.n})


class FeatureWriter(Protocol):
    """Where FEATURES records go: ("features", FeatureSnapshot) or ("erase", customer_id)."""

    def write(self, record: tuple[str, Any]) -> None:
        """Apply one record (a snapshot upsert or a customer's erasure)."""


class CountFeatures:
    """The default feature writer: counts what a feature store would get."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def write(self, record: tuple[str, Any]) -> None:
        """Count one record by kind."""
        self.counts[record[0]] = self.counts.get(record[0], 0) + 1


class WriteFeatures(beam.PTransform):
    """FEATURES records -> the run's feature writer (flushed at the end of every bundle)."""

    def __init__(self, local: Local) -> None:
        super().__init__()
        self.local = local
        flow(local).reporting.add(FEATURES)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        """One ParDo applying the writer."""
        return records | "Apply" >> beam.ParDo(_ApplyFeatures(self.local))


class _ApplyFeatures(beam.DoFn):
    def __init__(self, local: Local) -> None:
        self.local = local

    def setup(self) -> None:
        self.writer, self.lock = self.local.get(
            "features", lambda: (CountFeatures(), threading.Lock()))

    def start_bundle(self) -> None:
        self.batch: list[tuple[str, Any]] = []

    def process(self, record: tuple[str, Any]) -> Iterable[Any]:
        self.batch.append(record)
        return ()

    def finish_bundle(self) -> None:
        if self.batch:
            with self.lock:
                for record in self.batch:
                    self.writer.write(record)
                flush = getattr(self.writer, "flush", None)
                if callable(flush):
                    flush()
            flow(self.local).written(len(self.batch))
            tally(self.local).add({FEATURES: len(self.batch)})


class CollectOutputs(beam.PTransform):
    """Records of one kind -> the run's OutputFiles (offline runs, in this process)."""

    def __init__(self, local: Local, kind: str) -> None:
        super().__init__()
        self.local = local
        self.kind = kind

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        """One ParDo handing records to the collector."""
        return records | "Collect" >> beam.ParDo(_Collect(self.local, self.kind))


class _Collect(beam.DoFn):
    def __init__(self, local: Local, kind: str) -> None:
        self.local = local
        self.kind = kind

    def start_bundle(self) -> None:
        self.batch: list[Any] = []

    def process(self, record: Any) -> Iterable[Any]:
        self.batch.append(record)
        return ()

    def finish_bundle(self) -> None:
        out, lock = self.local.get("files")
        with lock:
            for record in self.batch:
                # FEATURES records are already (kind, record): snapshots, erasures, consents.
                out.write(record if self.kind == FEATURES else (self.kind, record))


def file_sinks(local: Local) -> dict[str, beam.PTransform]:
    """Sinks collecting every output kind into the run's OutputFiles."""
    return {kind: CollectOutputs(local, kind) for kind in SINKS}


def kafka_sinks(local: Local, settings: Settings) -> dict[str, beam.PTransform]:
    """Payloads, audit and dead letters to their topics; features to the run's writer."""
    k = settings.kafka
    return {
        PAYLOAD: WriteToKafka(local, k, k.payloads_topic, wire.payload_record, PAYLOAD),
        AUDIT: WriteToKafka(local, k, k.audit_topic, wire.audit_record, AUDIT),
        DEAD_LETTER: WriteToKafka(local, k, k.dead_letters_topic, wire.dead_letter_record,
                                  DEAD_LETTER),
        FEATURES: WriteFeatures(local),
        OUTCOME: WriteToKafka(local, k, k.outcomes_topic, wire.outcome_record, OUTCOME),
    }
