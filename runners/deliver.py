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
import heapq
import json
import logging
import re
import smtplib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from pipelines.connections import kafka_client_config, redis_client, smtp_connect, smtp_password
from pipelines.feature_store import key_id, parse_consent
from pipelines.wire import MESSAGE_ID_HEADER
from runners.progress import Progress
from transforms.codec import decode_payload
from transforms.model import ConsentState, EmailPayload
from transforms.settings import DeliverSettings, Settings, SettingsError

if TYPE_CHECKING:
    import redis
    from kafka import KafkaConsumer

log = logging.getLogger(__name__)

# Headers may run to RFC 5322's 998 characters: a long List-Unsubscribe URL has no space to
# fold at, and the default 78 makes the email package encode it (RFC 2047), which breaks it.
_POLICY = SMTP.clone(max_line_length=998)

DELIVERED = "delivered"
DUPLICATE = "duplicate"
EXPIRED = "expired"
ERASED = "erased"
REJECTED = "rejected"
INVALID = "invalid"
NO_CONSENT = "suppressed:no_consent"
OUTCOMES = (DELIVERED, DUPLICATE, EXPIRED, ERASED, NO_CONSENT, REJECTED, INVALID)

_SENT = b"sent"
_PENDING = b"pending"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Errors decode_payload raises on bytes that are not one of our payloads.
_UNDECODABLE = (ValueError, EOFError, IndexError, KeyError, TypeError, OverflowError)
_MAX_BACKOFF_S = 60.0
JOIN_WAIT_S = 30.0


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


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)


# ---------------------------------------------------------------------- the email


class Unsendable(ValueError):
    """The payload cannot become an email (bad id, address or header value)."""


def build_message(payload: EmailPayload, cfg: DeliverSettings, date_ms: int) -> EmailMessage:
    """The payload as a multipart/alternative email (text, then HTML).

    Message-ID is <message_id@deliver.message_id_domain>: stable across redeliveries, so a
    receiving system can drop repeats too. List-Unsubscribe carries the unsubscribe URL and
    List-Unsubscribe-Post marks it one-click (RFC 8058). Raises Unsendable.
    """
    mid = payload.message_id
    if not _SAFE_ID.match(mid):
        raise Unsendable("message_id is not a plain token")
    msg = EmailMessage(policy=_POLICY)
    part = "To"
    try:
        to = Address(display_name=payload.recipient_name or "", addr_spec=payload.recipient_email)
        headers = (
            ("Subject", payload.subject),
            ("From", cfg.sender),
            ("To", to),
            ("Date", formatdate(date_ms / 1000.0, usegmt=True)),
            ("Message-ID", f"<{mid}@{cfg.message_id_domain}>"),
            ("List-Unsubscribe", f"<{unsubscribe_url(payload, cfg)}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("X-Personalize-Campaign", payload.campaign),
            ("X-Personalize-Variant", payload.variant),
        )
        for part, value in headers:
            msg[part] = value
        part = "body"
        msg.set_content(payload.text)
        msg.add_alternative(payload.html, subtype="html")
    except (ValueError, TypeError, IndexError) as exc:  # email's header errors are ValueErrors
        # The exception's text may quote the value (an address): name the part only.
        raise Unsendable(f"unusable {part} ({type(exc).__name__})") from exc
    return msg


def unsubscribe_url(payload: EmailPayload, cfg: DeliverSettings) -> str:
    """deliver.unsubscribe_url_template with the payload's ids URL-quoted."""
    return cfg.unsubscribe_url_template.format(
        customer_id=quote(payload.customer_id, safe=""),
        message_id=quote(payload.message_id, safe=""),
        campaign=quote(payload.campaign, safe=""),
    )


class TransientSmtpError(Exception):
    """The server or the connection failed in a way worth retrying later."""


class PermanentSmtpError(Exception):
    """The server refused the message for good (5xx)."""


class SmtpSender:
    """One SMTP connection, opened on first use (TLS and AUTH as deliver.smtp_* say) and
    reopened after a failure."""

    def __init__(self, cfg: DeliverSettings) -> None:
        smtp_password(cfg)  # a bad security setting fails here, before anything is read
        self.cfg = cfg
        self._smtp: smtplib.SMTP | None = None

    def send(self, msg: EmailMessage, sender: str, recipient: str) -> None:
        """Send, reconnecting once if the kept connection went away; raises
        TransientSmtpError or PermanentSmtpError."""
        for attempt in (1, 2):
            try:
                if self._smtp is None:
                    self._smtp = smtp_connect(self.cfg, self.cfg.smtp_timeout / 1000.0)
                self._smtp.send_message(msg, from_addr=sender, to_addrs=[recipient])
                return
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if attempt == 2:
                    raise TransientSmtpError("disconnected") from exc
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _ in exc.recipients.values()]
                _raise_for(min(codes) if codes else 0, "recipient refused", exc)
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                _raise_for(exc.smtp_code, type(exc).__name__, exc)
            except smtplib.SMTPNotSupportedError as exc:
                raise PermanentSmtpError("not supported by the server (SMTPUTF8?)") from exc
            except (smtplib.SMTPException, OSError) as exc:
                # Server replies may quote the address: keep the code, not the text.
                self._drop()
                code = getattr(exc, "smtp_code", None) or getattr(exc, "errno", None)
                raise TransientSmtpError(f"{type(exc).__name__} {code or ''}".strip()) from exc

    def close(self) -> None:
        """QUIT, ignoring a connection that is already gone."""
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            except OSError:
                pass
            self._smtp = None


# Refusals of the session, not of the message (RFC 4954 / 3207: authentication required,
# authentication failed, encryption required): a settings problem, so retried, never dropped.
_SESSION_REFUSALS = {530, 535, 538}


def _raise_for(code: int, what: str, exc: Exception) -> None:
    if code in _SESSION_REFUSALS:
        raise TransientSmtpError(f"{what}: {code} (check the deliver.smtp_* security settings)"
                                 ) from exc
    if code >= 500:
        raise PermanentSmtpError(f"{what}: {code}") from exc
    raise TransientSmtpError(f"{what}: {code}") from exc


# ---------------------------------------------------------------------- Redis ledger


class Ledger:
    """Which message_ids were sent (and which customers erased), in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, cfg: DeliverSettings) -> None:
        self.client = client
        self.prefix = prefix
        self.dedup_ttl = cfg.dedup_ttl
        self.claim_ttl = cfg.claim_ttl

    def key(self, message_id: str) -> str:
        """The ledger entry of one message."""
        return f"{self.prefix}delivered:{message_id}"

    def status(
        self, message_id: str, customer_id: str
    ) -> tuple[bool, ConsentState | None, bytes | None]:
        """(customer erased?, their consent as the job wrote it or None, ledger value or None)
        in one round trip."""
        cid = key_id(customer_id)
        values: list[bytes | None] = self.client.mget(  # type: ignore[assignment]
            f"{self.prefix}erased:{cid}",
            f"{self.prefix}customer:{cid}:consent",
            self.key(message_id),
        )
        stored = values[1]
        consent = None if stored is None else parse_consent(customer_id, stored)
        return values[0] is not None, consent, values[2]

    def claim(self, message_id: str) -> bool:
        """Take the message for sending; False when a claim or a record already exists."""
        return bool(self.client.set(self.key(message_id), _PENDING, nx=True, px=self.claim_ttl))

    def confirm(self, message_id: str, value: bytes = _SENT) -> None:
        """Record the message as done for deliver.dedup_ttl."""
        self.client.set(self.key(message_id), value, px=self.dedup_ttl)

    def release(self, message_id: str) -> None:
        """Give a claim back after a failed attempt."""
        self.client.delete(self.key(message_id))


# ---------------------------------------------------------------------- offsets


class OffsetTracker:
    """Per partition, the offsets read and not yet handled; commit = the lowest of them."""

    def __init__(self) -> None:
        self.open: dict[Any, set[int]] = {}
        self.next: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}

    def read(self, tp: Any, offset: int) -> None:
        """A record was read."""
        self.open.setdefault(tp, set()).add(offset)
        if offset + 1 > self.next.get(tp, -1):
            self.next[tp] = offset + 1

    def handled(self, tp: Any, offset: int) -> None:
        """A record was delivered or deliberately dropped."""
        self.open.get(tp, set()).discard(offset)

    def committable(self) -> dict[Any, int]:
        """Partitions whose commit position moved: tp -> the offset to commit."""
        moved = {}
        for tp, nxt in self.next.items():
            pending = self.open.get(tp)
            position = min(pending) if pending else nxt
            if position != self.committed.get(tp):
                moved[tp] = position
        return moved

    def mark_committed(self, positions: dict[Any, int]) -> None:
        """The positions were committed."""
        self.committed.update(positions)

    def forget(self, tps: Any) -> None:
        """Partitions were revoked: another consumer takes them from their commit point."""
        for tp in tps:
            self.open.pop(tp, None)
            self.next.pop(tp, None)
            self.committed.pop(tp, None)


# ---------------------------------------------------------------------- the connector


@dataclass(order=True)
class Held:
    """A message waiting: for its send_after (due_ms, data time) or a retry (wall time)."""

    due_ms: int
    seq: int
    tp: Any = field(compare=False)
    offset: int = field(compare=False)
    payload: EmailPayload = field(compare=False)
    attempts: int = field(default=0, compare=False)
    retry_at: float = field(default=0.0, compare=False)


class Deliverer:
    """The consume -> decide -> send -> commit loop."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        sender: SmtpSender,
        ledger: Ledger,
        cfg: DeliverSettings,
        clock: Callable[[], int] = wall_ms,
        audit: IO[str] | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.consumer = consumer
        self.sender = sender
        self.ledger = ledger
        self.cfg = cfg
        self.clock = clock
        self.audit = audit
        self.poll_ms = poll_ms
        self.offsets = OffsetTracker()
        self.held: list[Held] = []  # heap by send_after
        self.retries: list[Held] = []  # transient failures, by wall-clock retry_at
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.read = 0
        self.held_total = 0
        self.retried = 0
        self._seq = 0
        self._paused = False
        _, self.envelope_from = parseaddr(cfg.sender)
        self.progress = Progress("deliver")

    # ------------------------------------------------------------------ lifecycle

    def subscribe(self, topic: str) -> None:
        """Join the group on `topic`. On a rebalance: commit, then forget what is held for
        the partitions that went to another consumer (it reads them from the commit point).

        Partitions revoked and assigned straight back keep their held messages: kafka-python
        keeps their fetch positions, so nothing would read those messages again in this run.
        """
        from kafka import ConsumerRebalanceListener

        deliverer = self
        revoked_now: set[Any] = set()

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                deliverer.commit()
                revoked_now.update(revoked)

            def on_partitions_assigned(self, assigned: Any) -> None:
                deliverer.forget(revoked_now - set(assigned))
                revoked_now.clear()

        # Fetch the topic's metadata first: a group joined before the client knows the
        # topic's partitions is assigned none, and kafka-python may not rejoin for minutes.
        if not self.consumer.partitions_for_topic(topic):
            log.warning("deliver: topic %s has no partitions yet (does it exist?)", topic)
        self.consumer.subscribe([topic], listener=Listener())

    def run(self, max_messages: int | None = None, until_idle: float | None = None) -> dict:
        """Loop until max_messages were read or nothing happened for until_idle seconds.

        The idle clock starts once the group has assigned partitions (joining takes a
        moment), or after JOIN_WAIT_S without an assignment.
        """
        started = last_activity = time.monotonic()
        assigned = False
        while True:
            budget = None if max_messages is None else max_messages - self.read
            if budget is not None and budget <= 0:
                self.release_due()
                self.commit()
                break
            self._flow_control()
            batches = self.consumer.poll(timeout_ms=self.poll_ms, max_records=budget or None)
            handled = sum(self.counts.values())
            active = False
            for tp, records in batches.items():
                for rec in records:
                    self.read += 1
                    self.progress.tick(self.counts)
                    self.offsets.read(tp, rec.offset)
                    self.consider_record(tp, rec)
                    active = True
            self.release_due()
            self.commit()
            now = time.monotonic()
            if not assigned and (self.consumer.assignment() or now - started >= JOIN_WAIT_S):
                assigned, last_activity = True, now
            # Retries that keep failing are not activity: an unreachable server ends an
            # --until-idle run with those messages uncommitted.
            if active or sum(self.counts.values()) > handled or not assigned:
                last_activity = now
            elif until_idle is not None and now - last_activity >= until_idle:
                break
        self.progress.done(self.counts)
        return self.summary()

    def close(self) -> None:
        """Commit what is handled, close SMTP and leave the group."""
        try:
            self.commit()
        finally:
            self.sender.close()
            self.consumer.close(autocommit=False)

    def summary(self) -> dict[str, Any]:
        """Counts by outcome, plus what is still held or retrying."""
        return {
            "read": self.read,
            **self.counts,
            "deferred": len(self.held),
            "held_in_run": self.held_total,
            "retrying": len(self.retries),
            "retried": self.retried,
        }

    # ------------------------------------------------------------------ decisions

    def consider_record(self, tp: Any, rec: Any) -> None:
        """One record from the topic."""
        try:
            payload = decode_payload(rec.value)
        except _UNDECODABLE as exc:
            header = dict(rec.headers or []).get(MESSAGE_ID_HEADER, b"").decode("utf-8", "replace")
            key = (rec.key or b"").decode("utf-8", "replace")
            self._finish(
                tp,
                rec.offset,
                INVALID,
                header or None,
                key or None,
                reason=f"undecodable: {type(exc).__name__}",
            )
            return
        self.consider(Held(0, 0, tp, rec.offset, payload))

    def consider(self, entry: Held) -> None:
        """Decide on one payload: drop, hold, or send."""
        p = entry.payload
        now = self.clock()
        erased, consent, recorded = self.ledger.status(p.message_id, p.customer_id)
        if erased:
            self._finish(entry.tp, entry.offset, ERASED, p.message_id, p.customer_id)
        elif recorded is not None and recorded != _PENDING:
            self._finish(entry.tp, entry.offset, DUPLICATE, p.message_id, p.customer_id)
        elif consent is not None and not consent.granted:
            # The job emitted it with consent; the newest word since is an unsubscribe.
            self._finish(
                entry.tp,
                entry.offset,
                NO_CONSENT,
                p.message_id,
                p.customer_id,
                consent_as_of=consent.as_of,
            )
        elif p.expires_at <= now:
            self._finish(
                entry.tp,
                entry.offset,
                EXPIRED,
                p.message_id,
                p.customer_id,
                expires_at=p.expires_at,
            )
        elif p.send_after is not None and p.send_after > now:
            self._hold(entry, p.send_after)
        elif recorded == _PENDING or not self.ledger.claim(p.message_id):
            # Another sender holds it (or a crashed one did): look again later.
            self._retry(entry, "claimed elsewhere")
        else:
            self._send(entry)

    def _send(self, entry: Held) -> None:
        p = entry.payload
        try:
            msg = build_message(p, self.cfg, wall_ms())
        except Unsendable as exc:
            self.ledger.confirm(p.message_id, b"invalid")
            self._finish(
                entry.tp, entry.offset, INVALID, p.message_id, p.customer_id, reason=str(exc)
            )
            return
        try:
            self.sender.send(msg, self.envelope_from, p.recipient_email)
        except PermanentSmtpError as exc:
            self.ledger.confirm(p.message_id, b"rejected")
            self._finish(
                entry.tp, entry.offset, REJECTED, p.message_id, p.customer_id, reason=str(exc)
            )
            return
        except TransientSmtpError as exc:
            self.ledger.release(p.message_id)
            self._retry(entry, str(exc))
            return
        self.ledger.confirm(p.message_id)
        self._finish(entry.tp, entry.offset, DELIVERED, p.message_id, p.customer_id)

    def _hold(self, entry: Held, due_ms: int) -> None:
        if entry.due_ms == 0:
            self.held_total += 1
            log.info(
                "deliver: held message_id=%s customer_id=%s until %d",
                entry.payload.message_id,
                entry.payload.customer_id,
                due_ms,
            )
        self._seq += 1
        entry.due_ms, entry.seq = due_ms, self._seq
        heapq.heappush(self.held, entry)

    def _retry(self, entry: Held, reason: str) -> None:
        entry.attempts += 1
        self.retried += 1
        delay = min(_MAX_BACKOFF_S, 0.5 * 2 ** (entry.attempts - 1))
        entry.retry_at = time.monotonic() + delay
        self.retries.append(entry)
        log.warning(
            "deliver: retry in %.1fs message_id=%s customer_id=%s: %s",
            delay,
            entry.payload.message_id,
            entry.payload.customer_id,
            reason,
        )

    def release_due(self) -> None:
        """Reconsider held messages whose send_after has come and retries that are due."""
        now = self.clock()
        while self.held and self.held[0].due_ms <= now:
            self.consider(heapq.heappop(self.held))
        if self.retries:
            wall = time.monotonic()
            due = [e for e in self.retries if e.retry_at <= wall]
            if due:
                self.retries = [e for e in self.retries if e.retry_at > wall]
                for entry in due:
                    self.consider(entry)

    def _finish(
        self,
        tp: Any,
        offset: int,
        outcome: str,
        message_id: str | None,
        customer_id: str | None,
        **extra: Any,
    ) -> None:
        self.offsets.handled(tp, offset)
        self.counts[outcome] += 1
        line = {
            "at": self.clock(),
            "decision": outcome,
            "message_id": message_id,
            "customer_id": customer_id,
            "topic": tp.topic,
            "partition": tp.partition,
            "offset": offset,
            **extra,
        }
        if outcome != DELIVERED:
            log.info(
                "deliver: %s message_id=%s customer_id=%s%s",
                outcome,
                message_id,
                customer_id,
                f" ({extra['reason']})" if "reason" in extra else "",
            )
        if self.audit is not None:
            self.audit.write(json.dumps(line, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ offsets

    def commit(self) -> None:
        """Commit each partition up to its lowest unhandled offset (if that moved)."""
        from kafka.structs import OffsetAndMetadata

        moved = self.offsets.committable()
        if not moved:
            return
        self.consumer.commit({tp: OffsetAndMetadata(pos, "", -1) for tp, pos in moved.items()})
        self.offsets.mark_committed(moved)
        if self.audit is not None:
            self.audit.flush()

    def forget(self, tps: Any) -> None:
        """Drop what is held for revoked partitions (their new owner reads it again)."""
        gone = set(tps)
        self.held = [e for e in self.held if e.tp not in gone]
        heapq.heapify(self.held)
        self.retries = [e for e in self.retries if e.tp not in gone]
        self.offsets.forget(gone)

    def _flow_control(self) -> None:
        """Pause fetching while deliver.max_held messages are held; resume below it."""
        full = len(self.held) + len(self.retries) >= self.cfg.max_held
        if full and not self._paused:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
        elif not full and self._paused:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False
