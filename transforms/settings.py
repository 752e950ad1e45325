"""One typed settings object for the whole job, with defaults from shared/DESIGN.md section 4.

Loaded from a TOML file, then overridden by environment variables, then by `--set` pairs from
the command line, and passed down explicitly. Nothing else in the code reads the environment.

    [core]
    cart_delay = "1h"          # durations: int milliseconds or "500ms", "10s", "30m", "1h", "30d"
    [kafka]
    bootstrap = "127.0.0.1:9092"

Environment: PERSONALIZE_<SECTION>__<KEY>=value (e.g. PERSONALIZE_KAFKA__BOOTSTRAP=...).
Command line: --set core.cart_delay=2h.

Secrets are never settings: a `*_password_env` / `*_password_file` setting names where the
secret is, and pipelines/connections.py reads it when a client connects, so no dump, log or
job argument of the settings can hold one.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_UNITS = {"ms": 1, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")

ENV_PREFIX = "PERSONALIZE_"


class SettingsError(ValueError):
    """A setting is unknown or has a value of the wrong type; the message says which."""


def parse_duration(value: int | str) -> int:
    """Milliseconds from an int (already ms) or a string like "90s", "30m", "1h", "24h", "30d"."""
    if isinstance(value, bool):
        raise SettingsError(f"not a duration: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    m = _DURATION.match(text)
    if not m:
        raise SettingsError(f"not a duration: {value!r} (use e.g. 500ms, 10s, 30m, 1h, 30d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(value: Any) -> bool:
    """True / False from "true", "yes", "on", "1" / "false", "no", "off", "0" (any case);
    anything else is a SettingsError, not a silent False (a typo must not turn a stage off)."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"not a boolean: {value!r} (use true or false)")


def duration(default_ms: int) -> Any:
    """A dataclass field holding a duration in milliseconds (parsed from strings on load)."""
    return field(default=default_ms, metadata={"duration": True})


@dataclass(slots=True)
class CoreSettings:
    """Business rules of transforms/: every number of DESIGN.md section 4."""

    dedup_ttl: int = duration(24 * HOUR)
    max_out_of_orderness: int = duration(10 * SECOND)
    # Events more than this ahead of the wall clock at receipt are dead-lettered (clock.py).
    max_future: int = duration(5 * MINUTE)
    # File replays: 0 reads the file as one partition; N spreads customers over N partitions
    # as Kafka's default partitioner does (transforms/clock.py source_partition), profiles in
    # partitions of their own (Kafka's profiles topic) that move no events' watermark.
    replay_partitions: int = 0
    cart_delay: int = duration(1 * HOUR)
    cart_ttl: int = duration(7 * DAY)
    browse_window: int = duration(30 * MINUTE)
    browse_views: int = 5
    browse_cooldown: int = duration(24 * HOUR)
    max_per_day: int = 2
    max_per_type_per_day: int = 1
    cap_window: int = duration(24 * HOUR)
    quiet_start_hour: int = 22
    quiet_end_hour: int = 8
    payload_ttl: int = duration(24 * HOUR)
    erasure_ttl: int = duration(30 * DAY)
    recent_items: int = 20
    top_k: int = 4
    feature_write_interval: int = duration(60 * SECOND)
    max_string_length: int = 2048
    max_properties: int = 32
    default_time_zone: str = "UTC"
    # Output size bounds (DESIGN.md section 8, Sizes; transforms/sizes.py). max_output_bytes is
    # the largest encoded payload or dead letter: keep it below the broker's max.message.bytes
    # (Kafka's default is 1 MB). A payload still above it is sent as its trigger's fallback.
    max_evidence_items: int = 50      # product ids (and their event ids) a payload carries
    max_rendered_items: int = 10      # evidence products an email shows
    max_name_length: int = 64         # recipient name, in characters (control chars removed)
    max_output_bytes: int = 900_000
    max_dead_letter_raw: int = 65_536  # raw bytes a dead letter keeps (plus length and SHA-256)
    # Consent channels input may name (comma separated, case-insensitive); any other is a
    # dead letter. Only `email` changes what this job sends.
    consent_channels: str = "email,sms,push"
    # Size caps of each customer's state (DESIGN.md section 8, table in transforms/state.py):
    # over a cap, the oldest entries are evicted and counted as dropped `evicted:<part>`.
    max_dedup_ids: int = 10_000
    # Over it, a customer's oldest pending items are processed early, before the watermark
    # passes them: in arrival order with that customer's other input (a profile still in
    # flight on another partition may come after them), so engines may then differ for that
    # customer. 5 000 holds 500 events/s of one customer within the default out-of-orderness.
    max_pending: int = 5_000
    max_sessions: int = 1_000
    max_categories: int = 200  # viewed categories in the windows and in browse intensity
    max_category_views: int = 50  # browse-intensity views held per category
    max_cart_lines: int = 500
    max_purchased: int = 1_000
    # Learning loop (DESIGN.md section 9; transforms/attribution.py): opens, clicks and
    # purchases within attribution_window after a send are outcomes of that message; each
    # customer remembers at most max_attributed_messages sends (oldest evicted first).
    attribution_window: int = duration(72 * HOUR)
    max_attributed_messages: int = 50
    # The global control group: this share of customers (by SHA-256 of salt + customer id)
    # is audited suppressed:holdout instead of emailed; 0 disables it.
    holdout_share: float = 0.05
    holdout_salt: str = "holdout-v1"
    # The subject variant of each message (transforms/bandit.py): "thompson" (Thompson
    # sampling on bandit_reward, "click" or "open", from the counts before the start of the
    # fire's bandit_epoch), "uniform" (a stable hash split) or "fixed:<variant>".
    variant_policy: str = "thompson"
    bandit_epoch: int = duration(1 * HOUR)
    bandit_reward: str = "click"
    max_bandit_rewarded: int = 10_000  # rewarded messages remembered per trigger type
    # Segments (transforms/segments.py, docs/segments.md): lifecycle from the last activity and
    # the 30-d windows (lapsed_after at most 30d), tiers from the engagement score (a score at a
    # cut point is in the upper tier), RFM quintile edges used without a trained model (R: days
    # since the last activity, F: sessions in 7 d, M: revenue in 30 d; 4 ascending numbers).
    lifecycle_at_risk_after: int = duration(7 * DAY)
    lifecycle_lapsed_after: int = duration(21 * DAY)
    lifecycle_new_max_sessions: int = 1
    tier_medium_from: float = 35.0
    tier_high_from: float = 55.0
    rfm_recency_edges: str = "1,3,7,14"
    rfm_frequency_edges: str = "1,2,3,5"
    rfm_monetary_edges: str = "0,50,150,500"
    # Trigger types limited to segments, applied by the policy to any trigger type (audited
    # suppressed:segment); "" = no limits. Format (segments.SegmentLimits):
    # "browse_intensity=lifecycle:active|at_risk;cart_abandonment=tier:high|medium,r:4|5".
    trigger_segments: str = ""
    # Triggers (DESIGN.md sections 4 and 10, transforms/triggers/). When several fire for one
    # customer at one instant, the first in this order goes on (comma separated; a type not
    # listed comes after all listed ones, by name).
    trigger_priority: str = (
        "cart_abandonment,browse_intensity,back_in_stock,price_drop,post_purchase,"
        "engagement_followup,welcome,win_back"
    )
    # The CRM profile and consent are forgotten this long after the customer's last touch
    # (activity, profile, consent), never while a trigger deadline is armed (transforms/core.py).
    profile_ttl: int = duration(30 * DAY)
    post_purchase_enabled: bool = True
    post_purchase_delay: int = duration(3 * DAY)  # after the last purchase of the order(s)
    post_purchase_max_items: int = 20             # purchased products held as evidence
    win_back_enabled: bool = True
    win_back_delay: int = duration(30 * DAY)      # no activity this long after a purchase
    welcome_enabled: bool = True
    welcome_delay: int = duration(10 * MINUTE)    # after the first consent grant or sign-up
    welcome_on_profile: bool = False              # a first profile stating consent counts
    # A sign-up is a behaviour event whose properties[welcome_signup_property] equals
    # welcome_signup_value (no schema change: transforms/triggers/welcome.py).
    welcome_signup_property: str = "action"
    welcome_signup_value: str = "sign_up"
    followup_enabled: bool = True
    followup_window: int = duration(2 * HOUR)     # an email click with no site visit within it
    # The product stage and its triggers (price_drop, back_in_stock). False: a deployment
    # without a catalog stream: no engine builds the product stage, the Kafka jobs do not read
    # kafka.catalog_changes_topic, and a catalog change that still arrives (a replay file) is a
    # dead letter `catalog_signals_off` (transforms/catalog_changes.py refused_change).
    catalog_signals: bool = True
    # Price drop and back in stock (transforms/product_stage.py, transforms/triggers/
    # price_drop.py, back_in_stock.py): per product, the customers who viewed or carted it
    # within interest_window and did not buy it since, the newest max_interested of them.
    interest_window: int = duration(14 * DAY)
    max_interested: int = 1_000
    # Views, cart adds and purchases a product buffers before a wake folds them into its
    # interest (transforms/product_stage.py: interest is otherwise folded in when a change is
    # processed, or at its expiry). Memory per product against state writes per view.
    interest_fold: int = 128
    price_drop_min_pct: float = 10.0  # a drop of at least this percent of the last price
    catalog_state_ttl: int = duration(30 * DAY)  # a product's last price / stock, after its change
    max_change_ids: int = 1_000  # catalog change ids held per product for dedup (dedup_ttl)
    price_drop_cooldown: int = duration(7 * DAY)  # per customer and product
    back_in_stock_cooldown: int = duration(7 * DAY)  # per customer and product
    max_signal_products: int = 200  # cooldown entries per customer and trigger


@dataclass(slots=True)
class KafkaSettings:
    """Where the job reads and writes; partitions are used when topics are created."""

    bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "behaviour-events"
    profiles_topic: str = "customer-profiles"
    payloads_topic: str = "email-payloads"
    dead_letters_topic: str = "dead-letters"
    audit_topic: str = "policy-audit"
    outcomes_topic: str = "email-outcomes"
    catalog_changes_topic: str = "catalog-changes"  # price / stock changes (catalog_change.avsc)
    partitions: int = 4
    group_id: str = "personalize"
    # The local broker of `personalize services` (KRaft controller listener and JVM heap).
    controller_port: int = 9093
    heap: str = "512m"
    # Secure connections (docs/security.md), for every Kafka client of the project. Files are
    # PEM paths on each machine that connects; the password is read from the environment
    # variable named by sasl_password_env or from sasl_password_file, never a setting itself.
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    ssl_cafile: str = ""  # CA bundle the broker's certificate is checked against ("" = system)
    ssl_certfile: str = ""  # client certificate, for mutual TLS
    ssl_keyfile: str = ""  # its private key (PKCS#8, unencrypted)
    ssl_check_hostname: bool = True
    sasl_mechanism: str = "PLAIN"  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password_env: str = ""
    sasl_password_file: str = ""


@dataclass(slots=True)
class RedisSettings:
    """The feature store and catalog."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    feature_ttl: int = duration(30 * DAY)
    key_prefix: str = "personalize:"
    # The core reads products from Redis (set by `personalize run` and the demo; replays
    # without it render from a catalog file, paths.catalog, or from what the events say).
    use_catalog: bool = False
    # AUTH and TLS (docs/security.md): the password comes from the environment variable named
    # by password_env or from password_file, never a setting itself.
    username: str = ""  # an ACL user ("" = the default user, plain `requirepass`)
    password_env: str = ""
    password_file: str = ""
    ssl: bool = False
    ssl_cafile: str = ""  # CA bundle the server's certificate is checked against ("" = system)
    ssl_certfile: str = ""  # client certificate (redis-server's tls-auth-clients)
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True


@dataclass(slots=True)
class DeliverSettings:
    """`personalize deliver`, the reference ESP connector: SMTP server, sender, dedup ledger."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_timeout: int = duration(10 * SECOND)
    sender: str = "Example Shop <shop@example.invalid>"
    # Placeholders {customer_id}, {message_id}, {campaign} (URL-quoted). A real deployment
    # points this at an endpoint that accepts RFC 8058 one-click POSTs, ideally with a signed
    # token in place of the raw ids.
    unsubscribe_url_template: str = (
        "https://shop.example.invalid/unsubscribe?c={customer_id}&m={message_id}"
    )
    # Right-hand side of the Message-ID header: <message_id@domain>.
    message_id_domain: str = "personalize.example.invalid"
    group_id: str = "personalize-deliver"
    # How long the Redis ledger remembers a delivered message_id (drops repeats in between).
    dedup_ttl: int = duration(7 * DAY)
    # A claim on a message_id being sent; a crashed sender's claim lapses after this.
    claim_ttl: int = duration(5 * MINUTE)
    # Deferred messages (send_after in the future) held in memory; fetching pauses when full.
    max_held: int = 10_000
    audit_file: str = ""  # JSONL of every decision (no personal data); "" = log lines only
    # SMTP security (docs/security.md). smtp_tls: "off" (loopback only), "starttls" (required:
    # a server that does not offer it gets nothing, not even AUTH) or "implicit" (SMTPS, 465).
    # The password comes from the environment variable named by smtp_password_env or from
    # smtp_password_file; AUTH is never sent without TLS.
    smtp_tls: str = "off"
    smtp_cafile: str = ""  # CA bundle the server's certificate is checked against ("" = system)
    smtp_check_hostname: bool = True
    smtp_username: str = ""
    smtp_password_env: str = ""
    smtp_password_file: str = ""


@dataclass(slots=True)
class FlinkSettings:
    """PyFlink runtime and the standalone cluster started by `personalize services`."""

    jobmanager_port: int = 8081
    rpc_port: int = 6123
    parallelism: int = 1
    task_slots: int = 2
    # TaskManagers of the local standalone cluster of `personalize services` (each with
    # task_slots slots). In thread mode the Python of all slots of one TaskManager shares its
    # one interpreter (one GIL): to use N cores, N TaskManagers of 1 slot (docs/flink-deploy.md).
    taskmanagers: int = 1
    execution_mode: str = "thread"
    checkpoint_interval: int = duration(5 * SECOND)
    checkpoint_mode: str = "exactly_once"
    state_backend: str = "hashmap"
    idleness: int = duration(2 * SECOND)
    # How often sources emit watermarks (pipeline.auto-watermark-interval): bounds the delay
    # between the watermark passing a deadline and the timer firing.
    watermark_interval: int = duration(200)
    # How long a task holds a partly filled network buffer before sending it on
    # (execution.buffer-timeout.interval; Flink's default): each hop between tasks adds up to
    # this to trigger latency at low rates. Lower costs some CPU per record.
    buffer_timeout: int = duration(100)
    # Backstop TTL of each customer's Flink state (processing time, refreshed on write): longer
    # than the core's longest retention (30 d), so only a customer the core forgot is dropped.
    state_ttl: int = duration(45 * DAY)
    # Live CustomerState objects the keyed operator keeps for its most recently written
    # customers, so reading a customer's state back needs no unpickling (Flink's ValueState
    # stays the source of truth, written on every change). 0 turns it off. Memory: a few KB a
    # customer in the TaskManager's Python.
    state_cache: int = 10_000
    checkpoint_dir: str = ""         # "" = <state_dir>/flink/checkpoints (file:// on this host)
    # Exactly-once Kafka sinks: transactional.id prefix (one per job) and transaction timeout,
    # which must exceed the checkpoint interval plus recovery time and be <= the broker's
    # transaction.max.timeout.ms.
    transactional_id_prefix: str = "personalize"
    transaction_timeout: int = duration(15 * MINUTE)
    # Ship the project's code to the cluster with the job (--pyFiles). Off by default: in thread
    # mode a TaskManager's embedded Python keeps the modules of its first job for its lifetime,
    # so shipped code goes stale on the next job or restart; install the project into the
    # cluster's python.executable environment instead (docs/flink-deploy.md).
    ship_code: bool = False
    # Process sizes of the local standalone cluster started by `personalize services`.
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "2048m"


@dataclass(slots=True)
class PathSettings:
    """Where generated state lives (git-ignored)."""

    state_dir: str = ".state"
    jars_dir: str = ".jars"
    model: str = ""  # item-to-item model written by `personalize train` (.npz)
    catalog: str = ""  # catalog JSONL for offline runs (Kafka runs read Redis)


@dataclass(slots=True)
class Settings:
    """Everything, by section."""

    core: CoreSettings = field(default_factory=CoreSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    deliver: DeliverSettings = field(default_factory=DeliverSettings)
    paths: PathSettings = field(default_factory=PathSettings)

    def with_overrides(self, pairs: Iterable[str]) -> Settings:
        """A copy with `section.key=value` pairs applied (the CLI's --set)."""
        new = dataclasses.replace(
            self,
            **{
                f.name: dataclasses.replace(getattr(self, f.name)) for f in dataclasses.fields(self)
            },
        )
        for pair in pairs:
            if "=" not in pair or "." not in pair.split("=", 1)[0]:
                raise SettingsError(f"--set wants section.key=value, got {pair!r}")
            dotted, value = pair.split("=", 1)
            section, key = dotted.split(".", 1)
            _assign(new, section.strip(), key.strip(), value.strip())
        return new


def _assign(settings: Settings, section: str, key: str, value: Any) -> None:
    if section not in {f.name for f in dataclasses.fields(settings)}:
        raise SettingsError(f"unknown settings section {section!r}")
    target = getattr(settings, section)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        known = ", ".join(sorted(fields))
        raise SettingsError(f"unknown setting {section}.{key} (known: {known})")
    f = fields[key]
    current = getattr(target, key)
    try:
        if f.metadata.get("duration"):
            coerced: Any = parse_duration(value)
        elif isinstance(current, bool):
            coerced = value if isinstance(value, bool) else parse_bool(value)
        elif isinstance(current, int):
            coerced = int(value)
        elif isinstance(current, float):
            coerced = float(value)
        else:
            coerced = str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{section}.{key}: {exc}") from exc
    setattr(target, key, coerced)


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Settings:
    """Defaults <- TOML file <- environment (PERSONALIZE_SECTION__KEY) <- `overrides`."""
    settings = Settings()
    if path:
        p = Path(path)
        if not p.is_file():
            raise SettingsError(f"settings file not found: {p}")
        with p.open("rb") as fh:
            data = tomllib.load(fh)
        for section, values in data.items():
            if not isinstance(values, dict):
                raise SettingsError(f"[{section}] must be a table in {p}")
            for key, value in values.items():
                _assign(settings, section, key, value)
    for name, value in (env or {}).items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, key = name[len(ENV_PREFIX) :].lower().split("__", 1)
            _assign(settings, section, key, value)
    return settings.with_overrides(overrides)
