"""Secure connections: the security settings mapped to each client, in one place.

    secret(name, env_name, path) -> str | None         a secret named by *_env / *_file
    kafka_client_config(kafka) -> {kwarg: value}         kafka-python Producer/Consumer/Admin
    open_producer(kafka) -> KafkaProducer                bulk sends, keys and values bytes
    kafka_java_properties(kafka) -> {property: value}    Java clients (the Flink connector)
    flink_kafka_options(kafka) -> "'properties.x' = 'v', ..."   Flink Kafka table options
    redis_client(redis, **kw) -> redis.Redis             AUTH (credential provider) and TLS
    smtp_password(deliver) -> str | None                 checks the SMTP security settings
    smtp_connect(deliver, timeout_s) -> smtplib.SMTP     STARTTLS or SMTPS, then AUTH

Secrets are never settings: a setting names an environment variable or a file, read here when
a client is built (so a rotated file is picked up by the next connection). Each secret read is
remembered and masked as *** in every log record of the process (kafka-python logs its whole
configuration at DEBUG). Error messages name the setting, never the value or the reference.
docs/security.md shows a complete configuration.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from transforms.settings import DeliverSettings, KafkaSettings, RedisSettings, SettingsError

if TYPE_CHECKING:
    import redis
    from kafka import KafkaProducer
    from redis.credentials import CredentialProvider

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
# flink-sql-connector-kafka relocates the Kafka client: JAAS must name the shaded class.
FLINK_SHADED = "org.apache.flink.kafka.shaded."
SMTP_TLS = ("off", "starttls", "implicit")
MASK = "***"


class SecretError(SettingsError):
    """A secret reference that cannot be read; the message names the setting only."""


# ------------------------------------------------------------------------------ secrets

_seen: set[str] = set()


def secret(
    name: str, env_name: str, path: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The secret `name` from the variable `env_name` or the file at `path` (one trailing
    newline dropped); None when neither is set."""
    if env_name and path:
        raise SecretError(f"{name}: set {name}_env or {name}_file, not both")
    if env_name:
        value = (os.environ if environ is None else environ).get(env_name)
        if value is None:
            raise SecretError(f"{name}_env names an environment variable that is not set")
    elif path:
        try:
            value = Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise SecretError(f"{name}_file: cannot read it ({exc.strerror})") from None
    else:
        return None
    if not value:
        raise SecretError(f"{name}: the secret is empty")
    _mask(value)
    return value


def _mask(value: str) -> None:
    """Mask `value` in every log record made from now on (message and traceback), also as
    it shows inside a repr or JSON of a config dict."""
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    if forms <= _seen:
        return
    if not _seen:
        _install_masking()
    _seen.update(forms)


def redact(text: str) -> str:
    """`text` with every secret read so far replaced by ***."""
    for value in sorted(_seen, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _install_masking() -> None:
    make = logging.getLogRecordFactory()

    def masked(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(masked)


# ------------------------------------------------------------------------------ kafka


def _kafka_checked(k: KafkaSettings) -> tuple[str, bool, bool]:
    protocol = k.security_protocol.upper()
    if protocol not in KAFKA_PROTOCOLS:
        raise SettingsError(f"kafka.security_protocol: one of {', '.join(KAFKA_PROTOCOLS)}")
    uses_sasl = protocol.startswith("SASL_")
    if uses_sasl:
        if k.sasl_mechanism.upper() not in _LOGIN_MODULES:
            raise SettingsError(f"kafka.sasl_mechanism: one of {', '.join(_LOGIN_MODULES)}")
        if not k.sasl_username:
            raise SettingsError(f"kafka.sasl_username is needed with {protocol}")
    return protocol, uses_sasl, protocol.endswith("SSL")


def _kafka_password(k: KafkaSettings, environ: Mapping[str, str] | None) -> str:
    password = secret("kafka.sasl_password", k.sasl_password_env, k.sasl_password_file, environ)
    if password is None:
        raise SettingsError("kafka.sasl_password_env or kafka.sasl_password_file is needed "
                            f"with {k.security_protocol}")
    return password


def kafka_client_config(
    kafka: KafkaSettings | str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Keyword arguments of any kafka-python client: bootstrap servers and security.

    A bare bootstrap string is a plaintext connection (tests and the local broker)."""
    k = KafkaSettings(bootstrap=kafka) if isinstance(kafka, str) else kafka
    protocol, uses_sasl, uses_tls = _kafka_checked(k)
    config: dict[str, Any] = {"bootstrap_servers": k.bootstrap, "security_protocol": protocol}
    if uses_tls:
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(k, key):
                config[key] = getattr(k, key)
        config["ssl_check_hostname"] = k.ssl_check_hostname
    if uses_sasl:
        config["sasl_mechanism"] = k.sasl_mechanism.upper()
        config["sasl_plain_username"] = k.sasl_username
        config["sasl_plain_password"] = _kafka_password(k, environ)
    return config


def open_producer(kafka: KafkaSettings | str) -> KafkaProducer:
    """A producer tuned for bulk sends: acks from the leader, batches of up to 256 KiB."""
    from kafka import KafkaProducer

    return KafkaProducer(
        **kafka_client_config(kafka), acks=1, linger_ms=20, batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024, client_id="personalize-producer",
    )


def jaas_quoted(value: str) -> str:
    """`value` as a JAAS configuration string: in double quotes, `\\` and `"` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kafka_java_properties(
    kafka: KafkaSettings, environ: Mapping[str, str] | None = None, shaded: str = ""
) -> dict[str, str]:
    """The same settings as Java client properties; `shaded` prefixes the JAAS login module
    (FLINK_SHADED for the Flink connector). PEM files are read by path where the client runs."""
    protocol, uses_sasl, uses_tls = _kafka_checked(kafka)
    props = {"bootstrap.servers": kafka.bootstrap, "security.protocol": protocol}
    if uses_tls:
        if kafka.ssl_cafile:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = kafka.ssl_cafile
        if kafka.ssl_keyfile or kafka.ssl_certfile:
            # Java reads the key and its certificate chain from one PEM file.
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = kafka.ssl_keyfile or kafka.ssl_certfile
        if not kafka.ssl_check_hostname:
            props["ssl.endpoint.identification.algorithm"] = ""
    if uses_sasl:
        mechanism = kafka.sasl_mechanism.upper()
        props["sasl.mechanism"] = mechanism
        props["sasl.jaas.config"] = (
            f"{shaded}{_LOGIN_MODULES[mechanism]} required "
            f"username={jaas_quoted(kafka.sasl_username)} "
            f"password={jaas_quoted(_kafka_password(kafka, environ))};"
        )
    return props


def flink_kafka_options(kafka: KafkaSettings, environ: Mapping[str, str] | None = None) -> str:
    """The `properties.*` options of a Flink Kafka table (SQL string literals), bootstrap
    servers included."""
    props = kafka_java_properties(kafka, environ, shaded=FLINK_SHADED)
    return ", ".join(
        f"'properties.{key}' = '{value.replace(chr(39), chr(39) * 2)}'"
        for key, value in props.items()
    )


# ------------------------------------------------------------------------------ redis


class _RedisCredentials:
    """redis-py's CredentialProvider: the secret is read at each new connection, so it never
    sits in the client's connection arguments (or their repr)."""

    def __init__(self, server: RedisSettings) -> None:
        self.server = server

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        r = self.server
        password = secret("redis.password", r.password_env, r.password_file)
        if password is None:
            raise SettingsError("redis.username needs redis.password_env or password_file")
        return (r.username, password) if r.username else (password,)

    def __repr__(self) -> str:
        return f"_RedisCredentials(username={self.server.username!r})"


def redis_client(server: RedisSettings, **kwargs: Any) -> redis.Redis:
    """A client of settings.redis with its AUTH and TLS; `kwargs` go to redis.Redis as is."""
    import redis

    r = server
    auth = r.username or r.password_env or r.password_file
    if r.ssl:
        kwargs.update(
            ssl=True, ssl_ca_certs=r.ssl_cafile or None, ssl_certfile=r.ssl_certfile or None,
            ssl_keyfile=r.ssl_keyfile or None, ssl_check_hostname=r.ssl_check_hostname,
        )
    # Duck-typed (redis-py only calls get_credentials), so importing this module stays cheap.
    credentials = cast("CredentialProvider", _RedisCredentials(r)) if auth else None
    return redis.Redis(host=r.host, port=r.port, db=r.db, credential_provider=credentials,
                       **kwargs)


# ------------------------------------------------------------------------------ smtp


class SmtpSecurityError(smtplib.SMTPException):
    """TLS or AUTH could not be set up as the settings require; nothing was sent."""


def _tls_context(cfg: DeliverSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cfg.smtp_cafile or None)
    context.check_hostname = cfg.smtp_check_hostname
    return context


def smtp_password(cfg: DeliverSettings) -> str | None:
    """The password deliver.smtp_* name (None without a username); SettingsError when the
    settings would send AUTH in clear or name no readable password. Called before any
    connection, so a bad setting stops `deliver` before it reads anything."""
    mode = cfg.smtp_tls.lower()
    if mode not in SMTP_TLS:
        raise SettingsError(f"deliver.smtp_tls: one of {', '.join(SMTP_TLS)}")
    if not cfg.smtp_username:
        return None
    if mode == "off":
        raise SettingsError("deliver.smtp_username needs deliver.smtp_tls = starttls or implicit "
                            "(AUTH is never sent in clear)")
    password = secret("deliver.smtp_password", cfg.smtp_password_env, cfg.smtp_password_file)
    if password is None:
        raise SettingsError("deliver.smtp_username needs deliver.smtp_password_env or "
                            "smtp_password_file")
    return password


def smtp_connect(cfg: DeliverSettings, timeout_s: float) -> smtplib.SMTP:
    """An SMTP session ready for MAIL FROM: TLS first (STARTTLS right after EHLO, or SMTPS),
    then AUTH if a username is set (the password read anew). Raises SmtpSecurityError (or
    smtplib/ssl errors) before anything but EHLO went out in clear."""
    password = smtp_password(cfg)
    mode = cfg.smtp_tls.lower()
    smtp: smtplib.SMTP
    if mode == "implicit":
        smtp = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=timeout_s,
                                context=_tls_context(cfg))
    else:
        smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=timeout_s)
    try:
        if mode == "starttls":
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise SmtpSecurityError("the server does not offer STARTTLS (deliver.smtp_tls)")
            smtp.starttls(context=_tls_context(cfg))
            smtp.ehlo()
        if password is not None:
            smtp.login(cfg.smtp_username, password)
    except BaseException:
        smtp.close()
        raise
    return smtp
