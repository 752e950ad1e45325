"""The job on the standalone Flink cluster of `personalize services`.

    run_replay(items, settings, out_dir) -> summary    `personalize replay --runner flink-cluster`

A replay through the cluster is the production path end to end: the items go to fresh topics
of this replay only (kafka.partitions partitions, keyed by customer), the Kafka job reads them
bounded on the cluster, and its payloads, audit and dead letters are read back from its output
topics into the files every runner writes (pipelines/outputs.py). The topics and the consumer
group are deleted afterwards. Dead letters of the job name the input's own origin (file and
line), as on the other runners, not the replay topic's offset. What the job does not write to
Kafka (feature snapshots, dropped and erasure counts, customers active at the end) is listed
under `not_collected` in the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipelines.flink_pipeline import submit_to_cluster
from pipelines.outputs import OutputFiles
from runners._flink import Flink
from runners._kafka import ensure_topics
from runners.kafka_io import open_producer
from transforms.codec import decode_dead_letter, decode_payload, encode_event, encode_profile
from transforms.jsonl import audit_from_json
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    PAYLOAD,
    BehaviourEvent,
    DeadLetter,
    Item,
    Origin,
)
from transforms.settings import Settings

log = logging.getLogger(__name__)

NOT_COLLECTED = ("features", "dropped", "erasures", "active_customers_at_end")
# A bounded replay job runs to its end; this only bounds a job that never does.
JOB_TIMEOUT = 24 * 3600.0
SEND_TIMEOUT = 60.0
ADMIN_TIMEOUT_MS = 30_000
POLL_MS = 500

Origins = dict[tuple[str, int, int], Origin]


def run_replay(items: Iterable[Item | DeadLetter], settings: Settings,
               out_dir: Path) -> dict[str, Any]:
    """Replay `items` through the Kafka job on the cluster into out_dir/*.jsonl; the summary
    (with `topics`: the prefix of the topics it used, deleted on return)."""
    tag = f"replay-{uuid.uuid4().hex[:12]}"
    settings = replay_settings(settings, tag)
    k = settings.kafka
    topics = [k.events_topic, k.profiles_topic, k.payloads_topic, k.audit_topic,
              k.dead_letters_topic]
    out = OutputFiles(Path(out_dir))
    try:
        ensure_topics(k.bootstrap, topics, k.partitions)
        origins, records = produce(items, settings, out)
        options = argparse.Namespace(max_events=records, from_beginning=True, group_id=tag,
                                     job_name=tag, detached=True)
        job_id = submit_to_cluster(settings, options)
        cluster = Flink(settings)
        try:
            cluster.wait_job(job_id, timeout=JOB_TIMEOUT)
        finally:
            cluster.cancel(job_id)          # a no-op once it ended
        collect(settings, origins, out)
    finally:
        delete(settings, topics, tag)
    out.close()
    summary = {key: value for key, value in out.summary.items() if key not in NOT_COLLECTED}
    return {**summary, "not_collected": list(NOT_COLLECTED), "topics": tag}


def replay_settings(settings: Settings, tag: str) -> Settings:
    """`settings` with topics, consumer group and transactional ids of this replay only."""
    pairs = [f"kafka.group_id={tag}", f"flink.transactional_id_prefix={tag}"]
    pairs += [f"kafka.{name}_topic={tag}-{name}"
              for name in ("events", "profiles", "payloads", "audit", "dead_letters")]
    return settings.with_overrides(pairs)


def produce(items: Iterable[Item | DeadLetter], settings: Settings,
            out: OutputFiles) -> tuple[Origins, int]:
    """Events and profiles to the input topics (Avro, keyed by customer); the reader's dead
    letters straight to `out`, as the reference runner emits them. Returns where each record
    landed -> its item's origin, and how many records were sent."""
    k = settings.kafka
    producer = open_producer(k.bootstrap)
    sent: list[tuple[Any, Origin]] = []
    try:
        for item in items:
            out.count_input(item)
            if isinstance(item, DeadLetter):
                out.write((DEAD_LETTER, item))
                continue
            if isinstance(item, BehaviourEvent):
                topic, value = k.events_topic, encode_event(item)
            else:
                topic, value = k.profiles_topic, encode_profile(item)
            future = producer.send(topic, key=item.customer_id.encode(), value=value)
            sent.append((future, item.origin or Origin("unknown")))
        producer.flush()
        origins = {}
        for future, origin in sent:
            meta = future.get(timeout=SEND_TIMEOUT)
            origins[(meta.topic, meta.partition, meta.offset)] = origin
    finally:
        producer.close()
    return origins, len(sent)


def collect(settings: Settings, origins: Origins, out: OutputFiles) -> None:
    """Every committed record of the output topics into `out`; dead letters of a replayed
    record get that record's origin back."""
    k = settings.kafka
    for record in read_all(settings, k.payloads_topic):
        out.write((PAYLOAD, decode_payload(record.value)))
    for record in read_all(settings, k.audit_topic):
        out.write((AUDIT, audit_from_json(json.loads(record.value))))
    for record in read_all(settings, k.dead_letters_topic):
        dead = decode_dead_letter(record.value)
        o = dead.origin
        dead.origin = origins.get((o.topic, o.partition, o.offset), o)
        out.write((DEAD_LETTER, dead))


def read_all(settings: Settings, topic: str) -> list[Any]:
    """The committed records of `topic`, from its beginning to its end offsets now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for batch in consumer.poll(timeout_ms=POLL_MS).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def delete(settings: Settings, topics: list[str], group: str) -> None:
    """Delete this replay's topics and consumer group (what is left of them)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap,
                             request_timeout_ms=ADMIN_TIMEOUT_MS)
    try:
        admin.delete_topics(topics, timeout_ms=ADMIN_TIMEOUT_MS, raise_errors=False)
        with contextlib.suppress(KafkaError):
            admin.delete_groups([group])
    except KafkaError as exc:
        log.warning("replay: could not delete topics %s-*: %s", group, exc)
    finally:
        admin.close()
