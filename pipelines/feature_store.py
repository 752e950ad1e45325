"""The feature store: each customer's windowed features, engagement score and last trigger.

    FeatureStoreWriter(store).write(("features", FeatureSnapshot) | ("erase", customer_id)
                                    | ("consent", ConsentState))
    FeatureStore: write(snapshot), erase(customer_id), read(customer_id) -> dict | None, flush(),
                  write_consent(ConsentState), read_consent(customer_id) -> ConsentState | None

The engine adapters hand every FEATURES sink record (pipelines/wire.py) to a FeatureStoreWriter
and call `flush()` where their output must be durable (end of bundle, checkpoint, close).
The core already bounds the write rate (at most one snapshot per customer per
core.feature_write_interval of event time, plus one per fired trigger). Consent changes are
not write-behind: `write_consent` makes each durable before it returns, so `personalize deliver`
can re-check consent at send time (DESIGN.md section 8).

Redis layout (RedisFeatureStore), for other systems to read:

    <prefix>customer:<id>     hash: one field per feature (views_1h, views_24h, cart_adds_24h,
                              purchases_30d, revenue_30d, sessions_7d, email_opens_30d,
                              email_clicks_30d, last_activity_at, cart_items), the segment
                              (rfm_r, rfm_f, rfm_m 1-5; lifecycle; engagement_tier; cluster;
                              crm_stage: transforms/segments.py), engagement_score,
                              last_trigger, as_of (epoch ms of event time); fields whose value
                              is unknown (None) are absent. Numbers are decimal strings.
                              PEXPIRE redis.feature_ttl, renewed on each write.
    <prefix>customer:<id>:consent
                              email consent as the job holds it: "1:<as_of>" granted or
                              "0:<as_of>" revoked (as_of epoch ms; the newest as_of wins);
                              PEXPIRE redis.feature_ttl. Read by `personalize deliver`.
    <prefix>customer:<id>:*   anything else kept per customer (deleted with it on erasure)
    <prefix>erased:<id>       erasure tombstone, PEXPIRE core.erasure_ttl: later snapshots of
                              the customer are ignored, and `personalize deliver` drops payloads
                              still in flight for them

`<id>` is the customer id with "%" and ":" percent-encoded, so one customer's keys can never
be mistaken for another's ("12" vs "12:x"); the ids of the shipped data are digits, unchanged.

Writes are idempotent: a Lua script replaces the hash only when the snapshot's as_of is not
older than the stored one, so replays, retries and out-of-order flushes never move a customer
back in time. Writes are pipelined and sent every `batch_size` records, or `max_delay_ms`
after the first one queued (a timer thread, so a quiet stream's last snapshots do not wait for
the next write; the store is thread-safe), or on `flush()`. An erasure first sends what is
queued, then deletes in one transaction, so no snapshot written before it can survive it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.connections import redis_client
from transforms.model import CONSENT, ERASE, FEATURES, ConsentState, FeatureSnapshot
from transforms.settings import RedisSettings, Settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

AS_OF = "as_of"
ENGAGEMENT_SCORE = "engagement_score"
LAST_TRIGGER = "last_trigger"
_TOP_LEVEL = (AS_OF, ENGAGEMENT_SCORE, LAST_TRIGGER)
# Fields read back as strings whatever they look like (a CRM stage may be "2").
_STRINGS = frozenset({LAST_TRIGGER, "lifecycle", "engagement_tier", "crm_stage"})

# KEYS: hash, tombstone. ARGV: as_of, ttl_ms, then field, value pairs.
# Returns 1 when written, 0 when ignored (older than the stored as_of, or customer erased).
_WRITE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local stored = redis.call('HGET', KEYS[1], 'as_of')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: consent, tombstone. ARGV: as_of, ttl_ms, value ("<0|1>:<as_of>"). Returns 1 or 0 as above.
_CONSENT_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local stored = redis.call('GET', KEYS[1])
if stored then
  local at = tonumber(string.match(stored, ':(%d+)$'))
  if at and at > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
"""


class FeatureStore(Protocol):
    """Where customer features go; implementations may buffer until `flush()`."""

    def write(self, snapshot: FeatureSnapshot) -> None:
        """Store the snapshot unless the stored one is newer (idempotent)."""
        ...

    def erase(self, customer_id: str) -> None:
        """Delete everything held for the customer, and ignore their later snapshots."""
        ...

    def read(self, customer_id: str) -> dict[str, Any] | None:
        """The stored features as a flat dict (see `snapshot_fields`), or None."""
        ...

    def flush(self) -> None:
        """Make every buffered write durable."""
        ...

    def write_consent(self, consent: ConsentState) -> None:
        """Store the customer's consent unless a newer one is stored or they were erased;
        durable when it returns."""
        ...

    def read_consent(self, customer_id: str) -> ConsentState | None:
        """The stored consent, or None."""
        ...


def consent_value(consent: ConsentState) -> str:
    """The stored form of a consent: "1:<as_of>" granted, "0:<as_of>" revoked."""
    return f"{1 if consent.granted else 0}:{consent.as_of}"


def parse_consent(customer_id: str, value: bytes | str) -> ConsentState | None:
    """A stored consent value back, or None if it is not one."""
    text = value.decode() if isinstance(value, bytes) else value
    flag, _, at = text.partition(":")
    if flag not in ("0", "1") or not at.isdigit():
        return None
    return ConsentState(customer_id, flag == "1", int(at))


def snapshot_fields(snapshot: FeatureSnapshot) -> dict[str, Any]:
    """The flat field -> value mapping stored per customer (None values left out)."""
    fields: dict[str, Any] = {k: v for k, v in snapshot.features.items() if v is not None}
    fields[AS_OF] = snapshot.as_of
    fields[ENGAGEMENT_SCORE] = snapshot.engagement_score
    if snapshot.last_trigger is not None:
        fields[LAST_TRIGGER] = snapshot.last_trigger
    return fields


def key_id(customer_id: str) -> str:
    """The customer id as it appears in key names: "%" and ":" percent-encoded."""
    return customer_id.replace("%", "%25").replace(":", "%3A")


class RedisFeatureStore:
    """The feature store in Redis: a hash per customer, pipelined, idempotent by as_of.

    Picklable (for engine workers): the connection is opened on first use.
    """

    def __init__(
        self,
        server: RedisSettings | None = None,
        *,
        key_prefix: str = "personalize:",
        feature_ttl_ms: int,
        tombstone_ttl_ms: int,
        batch_size: int = 500,
        max_delay_ms: int = 200,
    ) -> None:
        if feature_ttl_ms <= 0 or tombstone_ttl_ms <= 0:
            raise ValueError("feature_ttl_ms and tombstone_ttl_ms must be positive")
        self.server = server or RedisSettings()
        self.prefix = key_prefix
        self.feature_ttl_ms = feature_ttl_ms
        self.tombstone_ttl_ms = tombstone_ttl_ms
        self.batch_size = max(1, batch_size)
        self.max_delay_ms = max_delay_ms
        self._client: redis.Redis | None = None
        self._pipe: Any = None
        self._script: Any = None
        self._consent_script: Any = None
        self._pending = 0
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._failure: Exception | None = None  # of a timer's flush, raised to the caller
        self.written = 0
        self.ignored = 0
        self.erased = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RedisFeatureStore:
        """A store on settings.redis, tombstones kept as long as the core remembers erasures."""
        r = settings.redis
        return cls(
            r,
            key_prefix=r.key_prefix,
            feature_ttl_ms=r.feature_ttl,
            tombstone_ttl_ms=settings.core.erasure_ttl,
            **kwargs,
        )

    # ------------------------------------------------------------------ keys

    def customer_key(self, customer_id: str) -> str:
        """The customer's feature hash."""
        return f"{self.prefix}customer:{key_id(customer_id)}"

    def tombstone_key(self, customer_id: str) -> str:
        """The customer's erasure tombstone."""
        return f"{self.prefix}erased:{key_id(customer_id)}"

    def consent_key(self, customer_id: str) -> str:
        """The customer's email consent."""
        return f"{self.customer_key(customer_id)}:consent"

    # ------------------------------------------------------------------ FeatureStore

    def write(self, snapshot: FeatureSnapshot) -> None:
        """Queue the idempotent replace of the customer's hash; send if the batch is due."""
        cid = snapshot.customer_id
        args: list[Any] = [snapshot.as_of, self.feature_ttl_ms]
        for name, value in snapshot_fields(snapshot).items():
            args.append(name)
            args.append(_encode(value))
        keys = [self.customer_key(cid), self.tombstone_key(cid)]
        with self._lock:
            self._raise_failure()
            pipe = self._pipeline()  # connects first: that registers the script
            self._script(keys=keys, args=args, client=pipe)
            self._pending += 1
            if self._pending >= self.batch_size:
                self.flush()
            elif self._pending == 1:
                self._start_timer()

    def erase(self, customer_id: str) -> None:
        """Queue the tombstone and the deletion of every key of the customer.

        The extra per-customer keys (<prefix>customer:<id>:*) are found with SCAN, which
        needs a round trip: the queued writes are sent first, so they cannot outlive it.
        """
        with self._lock:
            self.flush()
            client = self._connect()
            base = self.customer_key(customer_id)
            keys = [base, *client.scan_iter(match=_glob_escape(base) + ":*", count=1000)]
            pipe = client.pipeline(transaction=True)
            pipe.set(self.tombstone_key(customer_id), b"1", px=self.tombstone_ttl_ms)
            pipe.delete(*keys)
            pipe.execute()
            self.erased += 1
        log.info("feature store: erased customer %s (%d keys)", customer_id, len(keys))

    def write_consent(self, consent: ConsentState) -> None:
        """Queue the idempotent consent write and send it with everything queued before it."""
        cid = consent.customer_id
        keys = [self.consent_key(cid), self.tombstone_key(cid)]
        args = [consent.as_of, self.feature_ttl_ms, consent_value(consent)]
        with self._lock:
            self._raise_failure()
            pipe = self._pipeline()
            self._consent_script(keys=keys, args=args, client=pipe)
            self._pending += 1
            self.flush()

    def read_consent(self, customer_id: str) -> ConsentState | None:
        """The stored consent, or None."""
        value = self._connect().get(self.consent_key(customer_id))
        return None if value is None else parse_consent(customer_id, value)  # type: ignore[arg-type]

    def read(self, customer_id: str) -> dict[str, Any] | None:
        """The stored fields decoded (numbers as int or float), or None."""
        raw: dict[bytes, bytes] = self._connect().hgetall(  # type: ignore[assignment]
            self.customer_key(customer_id)
        )
        if not raw:
            return None
        return {k.decode(): _decode(k.decode(), v.decode()) for k, v in raw.items()}

    def flush(self) -> None:
        """Send the queued commands and count what the script did."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._raise_failure()
            if self._pending == 0 or self._pipe is None:
                return
            pending, self._pending = self._pending, 0
            try:
                results = self._pipe.execute()
            except Exception:
                self._pipe = None  # the batch is lost with the error: the caller fails
                raise
            for r in results:
                if r == 1:
                    self.written += 1
                elif r == 0:
                    self.ignored += 1
            log.debug("feature store: flushed %d writes", pending)

    def close(self) -> None:
        """Flush and drop the connection."""
        with self._lock:
            self.flush()
            if self._client is not None:
                self._client.close()
            self._client = self._pipe = self._script = self._consent_script = None

    # ------------------------------------------------------------------ internals

    def _connect(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.server)
            self._script = self._client.register_script(_WRITE_LUA)
            self._consent_script = self._client.register_script(_CONSENT_LUA)
        return self._client

    def _pipeline(self) -> Any:
        if self._pipe is None:
            self._pipe = self._connect().pipeline(transaction=False)
        return self._pipe

    def _start_timer(self) -> None:
        """Flush max_delay_ms after the first queued write, even if no other write comes."""
        timer = threading.Timer(self.max_delay_ms / 1000.0, self._timed_flush)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _timed_flush(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # flushed meanwhile; a newer timer may be pending
            self._timer = None
            try:
                self.flush()
            except Exception as exc:  # no caller on this thread: the next call raises it
                log.error("feature store: timed flush failed: %s", exc)
                self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def __getstate__(self) -> dict[str, Any]:
        if self._pending:
            raise RuntimeError("RedisFeatureStore pickled with unflushed writes")
        state = dict(self.__dict__)
        state.update(
            _client=None, _pipe=None, _script=None, _consent_script=None, _lock=None, _timer=None
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()


class FeatureStoreWriter:
    """The engines' hook: FEATURES sink records -> a FeatureStore.

    Records: ("features", FeatureSnapshot) | ("erase", customer_id) | ("consent",
    ConsentState), as pipelines/wire.py routes them. Anything else is a programming error and
    raises.
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.snapshots = 0
        self.erasures = 0
        self.consents = 0

    def write(self, record: tuple[str, Any]) -> None:
        """Hand one sink record to the store."""
        kind, value = record
        if kind == FEATURES:
            self.store.write(value)
            self.snapshots += 1
        elif kind == ERASE:
            self.store.erase(value)
            self.erasures += 1
        elif kind == CONSENT:
            self.store.write_consent(value)
            self.consents += 1
        else:
            raise ValueError(f"not a feature-store record: {kind!r}")

    def flush(self) -> None:
        """Make everything written so far durable (end of bundle, checkpoint)."""
        self.store.flush()

    def close(self) -> None:
        """Flush, and close the store if it holds a connection."""
        self.flush()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def redis_writer(settings: Settings, **kwargs: Any) -> FeatureStoreWriter:
    """The writer the Kafka runs use: a RedisFeatureStore on settings.redis."""
    return FeatureStoreWriter(RedisFeatureStore.from_settings(settings, **kwargs))


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _decode(name: str, text: str) -> Any:
    if name in _STRINGS:
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
