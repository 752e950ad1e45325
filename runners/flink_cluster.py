"""The job on the standalone Flink cluster of `personalize services`.

    submit_to_cluster(settings, options) -> job id     `personalize run --runner flink-cluster`
    run_replay(items, settings, out_dir) -> summary    `personalize replay --runner flink-cluster`

A cluster job is `flink run -py pipelines/flink_job.py` with every setting and the read as its
arguments (`job_args`), the Kafka connector jar, and, with flink.ship_code, the project's code
as one zip (`project_archive`).

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
import os
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipelines.connections import kafka_client_config, open_producer
from pipelines.outputs import OutputFiles
from runners.services import kafka_connector_jar
from runners.services._flink import Flink
from runners.services._kafka import ensure_topics
from runners.services._proc import PROJECT_ROOT
from transforms.codec import (
    decode_dead_letter,
    decode_outcome,
    decode_payload,
    encode_event,
    encode_profile,
)
from transforms.jsonl import audit_from_json
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    OUTCOME,
    PAYLOAD,
    BehaviourEvent,
    DeadLetter,
    Item,
    Origin,
)
from transforms.settings import Settings

log = logging.getLogger(__name__)

JOB_FILE = PROJECT_ROOT / "pipelines" / "flink_job.py"
# What a cluster job needs besides Python packages installed on the TaskManagers.
PROJECT_DIRS = ("transforms", "pipelines", "runners", "templates", "avro_schemas")
# Seconds `flink run` may take to submit (detached), or to run a bounded job (attached, and
# replays: they run to their end; this only bounds one that never does).
SUBMIT_TIMEOUT = 300.0
JOB_TIMEOUT = 24 * 3600.0
NOT_COLLECTED = ("features", "dropped", "erasures", "active_customers_at_end")
SEND_TIMEOUT = 60.0
ADMIN_TIMEOUT_MS = 30_000
POLL_MS = 500

Origins = dict[tuple[str, int, int], Origin]


def job_args(settings: Settings, options: Any) -> list[str]:
    """Program arguments of pipelines/flink_job.py: every setting as --set, and the read."""
    args: list[str] = []
    for section, values in asdict(settings).items():
        for key, value in values.items():
            args += ["--set", f"{section}.{key}={value}"]
    if getattr(options, "max_events", None) is not None:
        args += ["--max-events", str(options.max_events)]
    if getattr(options, "until_idle", None) is not None:
        args += ["--until-idle", str(options.until_idle)]
    if getattr(options, "from_beginning", False):
        args.append("--from-beginning")
    if getattr(options, "savepoint", None):
        args += ["--savepoint", options.savepoint]
    if getattr(options, "group_id", None):
        args += ["--group-id", options.group_id]
    if getattr(options, "feature_store", False):
        args.append("--feature-store")
    if getattr(options, "job_name", None):
        args += ["--job-name", options.job_name]
    return args


def project_archive(settings: Settings) -> Path:
    """The project's code, templates and schemas as one zip for --pyFiles (extracted on the
    TaskManagers into one folder, so templates/ and avro_schemas/ sit next to transforms/)."""
    state = Path(settings.paths.state_dir)
    state = state if state.is_absolute() else PROJECT_ROOT / state
    target = state / "flink" / "job" / "personalize-job.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for top in PROJECT_DIRS:
            for path in sorted((PROJECT_ROOT / top).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(PROJECT_ROOT).as_posix())
    os.replace(tmp, target)
    return target


def submit_to_cluster(settings: Settings, options: Any, timeout: float | None = None) -> str:
    """`flink run -py pipelines/flink_job.py --pyFiles <project zip> --jarfile <connector>` on
    the standalone cluster of `personalize services`; the job id. Detached unless asked not to
    be; attached, it returns when the job ends (bounded reads)."""
    bounded = getattr(options, "max_events", None) is not None or (
        getattr(options, "until_idle", None) is not None)
    detached = bool(getattr(options, "detached", False)) or not bounded
    # The outcomes topic is newer than some deployments' topics: the job writes it.
    ensure_topics(settings.kafka, [settings.kafka.outcomes_topic], settings.kafka.partitions)
    py_files = [project_archive(settings)] if settings.flink.ship_code else []
    return Flink(settings).submit(
        JOB_FILE, args=job_args(settings, options), py_files=py_files,
        jars=[kafka_connector_jar(settings)], detached=detached,
        timeout=timeout or (SUBMIT_TIMEOUT if detached else JOB_TIMEOUT),
    )


def run_replay(items: Iterable[Item | DeadLetter], settings: Settings,
               out_dir: Path) -> dict[str, Any]:
    """Replay `items` through the Kafka job on the cluster into out_dir/*.jsonl; the summary
    (with `topics`: the prefix of the topics it used, deleted on return)."""
    tag = f"replay-{uuid.uuid4().hex[:12]}"
    settings = replay_settings(settings, tag)
    k = settings.kafka
    topics = [k.events_topic, k.profiles_topic, k.payloads_topic, k.audit_topic,
              k.dead_letters_topic, k.outcomes_topic]
    out = OutputFiles(Path(out_dir))
    try:
        ensure_topics(k, topics, k.partitions)
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
              for name in ("events", "profiles", "payloads", "audit", "dead_letters", "outcomes")]
    return settings.with_overrides(pairs)


def produce(items: Iterable[Item | DeadLetter], settings: Settings,
            out: OutputFiles) -> tuple[Origins, int]:
    """Events and profiles to the input topics (Avro, keyed by customer); the reader's dead
    letters straight to `out`, as the reference runner emits them. Returns where each record
    landed -> its item's origin, and how many records were sent."""
    k = settings.kafka
    producer = open_producer(k)
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
    for record in read_all(settings, k.outcomes_topic):
        out.write((OUTCOME, decode_outcome(record.value)))
    for record in read_all(settings, k.dead_letters_topic):
        dead = decode_dead_letter(record.value)
        o = dead.origin
        dead.origin = origins.get((o.topic, o.partition, o.offset), o)
        out.write((DEAD_LETTER, dead))


def read_all(settings: Settings, topic: str) -> list[Any]:
    """The committed records of `topic`, from its beginning to its end offsets now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_client_config(settings.kafka), group_id=None,
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

    admin = KafkaAdminClient(**kafka_client_config(settings.kafka),
                             request_timeout_ms=ADMIN_TIMEOUT_MS)
    try:
        admin.delete_topics(topics, timeout_ms=ADMIN_TIMEOUT_MS, raise_errors=False)
        with contextlib.suppress(KafkaError):
            admin.delete_groups([group])
    except KafkaError as exc:
        log.warning("replay: could not delete topics %s-*: %s", group, exc)
    finally:
        admin.close()
