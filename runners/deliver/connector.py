"""The connector loop of `personalize deliver`: consume, decide, send, record, commit.

    Deliverer(consumer, sender, ledger, cfg, clock, audit).run(max_messages, until_idle)
    Ledger          the Redis ledger of message_ids (claimed, then sent)
    OffsetTracker   the commit point per partition: the lowest offset not yet handled

The order of the checks and the delivery guarantee: runners/deliver/__init__.py.
"""


from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import IO, TYPE_CHECKING, Any

from pipelines.feature_store import key_id, parse_consent
from pipelines.wire import MESSAGE_ID_HEADER
from runners.deliver.smtp import (
    PermanentSmtpError,
    SmtpSender,
    TransientSmtpError,
    Unsendable,
    build_message,
)
from runners.progress import Progress
from transforms.codec import decode_payload
from transforms.model import ConsentState, EmailPayload
from transforms.settings import DeliverSettings

if TYPE_CHECKING:
    import redis
    from kafka import KafkaConsumer

log = logging.getLogger(__name__)

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
# Errors decode_payload raises on bytes that are not one of our payloads.
_UNDECODABLE = (ValueError, EOFError, IndexError, KeyError, TypeError, OverflowError)
_MAX_BACKOFF_S = 60.0
JOIN_WAIT_S = 30.0


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)


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
