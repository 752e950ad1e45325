"""`personalize deliver`: the reference ESP connector downstream of the output topic.

    personalize deliver [--until-idle 10] [--max-messages N] [--now-ms T] [--audit FILE]

Consumes kafka.payloads_topic in the consumer group deliver.group_id (read_committed, so a
transactional job's aborted output is never sent) and, per payload, in this order:

    erased       the customer was erased (feature-store tombstone): dropped, audited
    duplicate    the Redis ledger already holds its message_id: dropped, audited
    suppressed:no_consent
                 the customer's email consent, as the job last wrote it to the feature store
                 (<prefix>customer:<id>:consent), is revoked: dropped, audited
    expired      expires_at has passed: dropped, audited
    deferred     send_after is still ahead: held in memory until then (not committed)
    delivered    sent as multipart/alternative MIME over SMTP, then recorded in the ledger
    rejected     the SMTP server refused it for good (5xx): dropped, audited
    invalid      undecodable bytes or unusable headers: dropped, audited

Erasure and consent are looked up again each time a message is considered, so a message held
for its send_after is dropped if the customer unsubscribed or was erased meanwhile.

At-least-once. Offsets are committed only up to the lowest offset not yet handled in each
partition, so a held or failing message keeps its partition's commit point while later ones
go on; after a restart they are read again and the ledger drops the ones already sent.
The ledger (<prefix>delivered:<message_id>) is claimed with SET NX before sending (value
`pending`, deliver.claim_ttl) and confirmed after (`sent`, deliver.dedup_ttl): a repeat read
meanwhile is retried later, not dropped, and a crashed sender's claim lapses. A crash between
the SMTP answer and the confirmation can send twice; nothing can be lost.

Time: `now` is the wall clock, or --now-ms (time as data: tests hold it fixed, so a message
held in one run is sent by a later run with a later --now-ms).

No personal data in logs or the audit file: message_id, customer_id, campaign, offsets and
times only; never addresses, names or content.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.connections import kafka_client_config, redis_client
from runners.deliver.connector import Deliverer, Ledger, wall_ms
from runners.deliver.smtp import SmtpSender
from transforms.settings import Settings, SettingsError


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `deliver` to the CLI."""
    p = sub.add_parser(
        "deliver",
        parents=parents,
        help="reference ESP connector: output topic -> SMTP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--max-messages",
        type=int,
        default=None,
        metavar="N",
        help="stop after reading N records (then handle what is due and commit)",
    )
    p.add_argument(
        "--until-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop when nothing arrived or was sent for SECONDS",
    )
    p.add_argument(
        "--now-ms",
        type=int,
        default=None,
        metavar="EPOCH_MS",
        help="the time send_after and expires_at are judged against (default: the wall clock)",
    )
    p.add_argument(
        "--audit",
        type=Path,
        default=None,
        metavar="FILE",
        help="append every decision as JSONL (default: deliver.audit_file)",
    )
    p.add_argument("--topic", default=None, help="default: kafka.payloads_topic")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Consume, deliver, commit; print the summary as JSON."""
    from kafka.errors import KafkaError

    try:
        summary = deliver_once(
            settings,
            now_ms=args.now_ms,
            max_messages=args.max_messages,
            until_idle=args.until_idle,
            audit=args.audit,
            topic=args.topic,
        )
    except KafkaError as exc:
        print(
            f"deliver: Kafka at {settings.kafka.bootstrap}: {exc} "
            "(start it with `personalize services up --only kafka,redis`)",
            file=sys.stderr,
        )
        return 1
    except SettingsError as exc:
        print(f"deliver: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


def deliver_once(
    settings: Settings,
    now_ms: int | None = None,
    max_messages: int | None = None,
    until_idle: float | None = None,
    audit: Path | None = None,
    topic: str | None = None,
) -> dict[str, Any]:
    """One connector run over the output topic (see the module docstring); its summary."""
    from kafka import KafkaConsumer

    cfg = settings.deliver
    if now_ms is not None:
        fixed = int(now_ms)
        clock: Callable[[], int] = lambda: fixed  # noqa: E731
    else:
        clock = wall_ms
    sender = SmtpSender(cfg)
    consumer = KafkaConsumer(
        **kafka_client_config(settings.kafka),
        group_id=cfg.group_id,
        client_id="personalize-deliver",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    r = settings.redis
    client = redis_client(r)
    audit_path = audit or (Path(cfg.audit_file) if cfg.audit_file else None)
    audit_fh = audit_path.open("a", encoding="utf-8") if audit_path else None
    deliverer = Deliverer(consumer, sender, Ledger(client, r.key_prefix, cfg), cfg, clock, audit_fh)
    try:
        deliverer.subscribe(topic or settings.kafka.payloads_topic)
        summary = deliverer.run(max_messages, until_idle)
    except KeyboardInterrupt:
        summary = deliverer.summary()
        summary["interrupted"] = True
    finally:
        deliverer.close()
        client.close()
        if audit_fh:
            audit_fh.close()
    return summary
