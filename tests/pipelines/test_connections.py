"""Secure-connection settings mapped to each client (pipelines/connections.py): Kafka for
kafka-python, Java clients and Flink DDL; Redis; secrets from env or file, never echoed."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest

from pipelines.connections import (
    SecretError,
    flink_kafka_options,
    kafka_client_config,
    kafka_java_properties,
    redis_client,
    secret,
)
from pipelines.flink_kafka import KafkaRead, sink_ddl, source_ddl
from runners.flink_cluster import job_args
from transforms.settings import KafkaSettings, RedisSettings, SettingsError, load_settings

SECRET = "s3cr'et\"pa\\ss"          # quotes and a backslash: escaped for SQL and JAAS
ENV = {"KAFKA_PW": SECRET}
ROOT = Path(__file__).resolve().parents[2]


def sasl(**kw) -> KafkaSettings:
    base = {"bootstrap": "broker:9094", "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "job",
            "sasl_password_env": "KAFKA_PW", "ssl_cafile": "/etc/kafka/ca.pem"}
    return KafkaSettings(**{**base, **kw})


# ------------------------------------------------------------------------------ secrets


def test_secret_comes_from_the_named_environment_variable():
    assert secret("kafka.sasl_password", "KAFKA_PW", "", ENV) == SECRET


def test_secret_comes_from_a_file_without_its_trailing_newline(tmp_path):
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    assert secret("kafka.sasl_password", "", str(path), {}) == SECRET


def test_no_reference_means_no_secret():
    assert secret("redis.password", "", "", ENV) is None


@pytest.mark.parametrize(("env_name", "path", "environ", "says"), [
    ("KAFKA_PW", "/run/pw", ENV, "both"),
    ("hunter2", "", {}, "not set"),                    # a password typed where a name goes
    ("", "/no/such/hunter2", {}, "cannot read"),
    ("EMPTY", "", {"EMPTY": ""}, "empty"),
])
def test_an_unusable_reference_names_the_setting_never_its_value(env_name, path, environ, says):
    with pytest.raises(SecretError) as info:
        secret("redis.password", env_name, path, environ)
    message = str(info.value)
    assert "redis.password" in message and says in message
    assert "hunter2" not in message and "KAFKA_PW" not in message
    assert isinstance(info.value, SettingsError)


def test_a_plaintext_secret_setting_does_not_exist_and_is_not_echoed():
    with pytest.raises(SettingsError) as info:
        load_settings(None, {}, ["redis.password=hunter2"])
    assert "hunter2" not in str(info.value)


def test_no_dump_of_the_settings_holds_a_secret(tmp_path):
    config = tmp_path / "personalize.toml"
    config.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_username = "job"\n'
                      'sasl_password_env = "KAFKA_PW"\n[redis]\npassword_file = "/run/redis"\n')
    env = {**ENV, "PERSONALIZE_DELIVER__SMTP_PASSWORD_ENV": "SMTP_PW", "SMTP_PW": SECRET}
    settings = load_settings(config, env, ["deliver.smtp_username=shop"])
    dumps = [repr(settings), str(dataclasses.asdict(settings)), " ".join(job_args(settings, None))]
    for text in dumps:
        assert SECRET not in text and "s3cr" not in text
    assert "KAFKA_PW" in dumps[2]       # the reference travels (to the Flink job), not the value


def test_a_secret_once_read_is_masked_in_every_log_record(caplog):
    logger = logging.getLogger("kafka.admin.client")
    value = "rotated-" + SECRET
    config = kafka_client_config(sasl(), {"KAFKA_PW": value})
    # The logger's own level too: the Kafka clients' loggers are quieted by other tests.
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        logger.debug("Starting KafkaAdminClient with configuration: %s", config)  # as it does
        try:
            raise ValueError(f"bad password {value}")
        except ValueError:
            logger.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "sasl_plain_password" in text and value not in text and "rotated-" not in text
    assert "***" in text


# ------------------------------------------------------------------------------ kafka


def test_plaintext_kafka_is_just_the_bootstrap_servers():
    assert kafka_client_config(KafkaSettings(bootstrap="b:9092")) == {
        "bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}
    assert kafka_java_properties(KafkaSettings(bootstrap="b:9092")) == {
        "bootstrap.servers": "b:9092", "security.protocol": "PLAINTEXT"}


def test_a_bare_bootstrap_string_is_a_plaintext_connection():
    assert kafka_client_config("b:9092") == {
        "bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_for_kafka_python():
    config = kafka_client_config(sasl(ssl_certfile="/c.pem", ssl_keyfile="/k.pem"), ENV)
    assert config == {
        "bootstrap_servers": "broker:9094", "security_protocol": "SASL_SSL",
        "ssl_cafile": "/etc/kafka/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
        "ssl_check_hostname": True, "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "job", "sasl_plain_password": SECRET,
    }


def test_sasl_for_java_clients_quotes_the_jaas_password():
    props = kafka_java_properties(sasl(ssl_check_hostname=False), ENV)
    assert props["security.protocol"] == "SASL_SSL"
    assert props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["ssl.truststore.type"] == "PEM"
    assert props["ssl.truststore.location"] == "/etc/kafka/ca.pem"
    assert props["ssl.endpoint.identification.algorithm"] == ""
    assert props["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="job" password="s3cr\'et\\"pa\\\\ss";')


def test_plain_mechanism_and_mutual_tls_for_java_clients():
    props = kafka_java_properties(
        sasl(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", ssl_cafile=""), ENV)
    assert props["sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required ")
    assert not any(k.startswith("ssl.") for k in props)      # no TLS on SASL_PLAINTEXT
    mtls = kafka_java_properties(KafkaSettings(security_protocol="SSL", ssl_keyfile="/k.pem"))
    assert mtls["ssl.keystore.type"] == "PEM" and mtls["ssl.keystore.location"] == "/k.pem"


@pytest.mark.parametrize("bad", [
    {"security_protocol": "TLS"},
    {"sasl_mechanism": "GSSAPI"},
    {"sasl_username": ""},
    {"sasl_password_env": ""},
])
def test_unusable_kafka_security_settings_are_refused(bad):
    with pytest.raises(SettingsError):
        kafka_client_config(sasl(**bad), ENV)


def test_flink_connector_options_are_sql_quoted_and_shaded():
    options = flink_kafka_options(sasl(), ENV)
    assert "'properties.bootstrap.servers' = 'broker:9094'" in options
    assert "'properties.security.protocol' = 'SASL_SSL'" in options
    jaas = ("'properties.sasl.jaas.config' = 'org.apache.flink.kafka.shaded.org.apache.kafka."
            "common.security.scram.ScramLoginModule required username=\"job\" "
            "password=\"s3cr''et\\\"pa\\\\ss\";'")
    assert jaas in options


def test_every_flink_kafka_table_carries_the_security_options(monkeypatch):
    monkeypatch.setenv("KAFKA_PW", SECRET)
    settings = load_settings(None, {}, [
        "kafka.security_protocol=SASL_PLAINTEXT", "kafka.sasl_username=job",
        "kafka.sasl_password_env=KAFKA_PW"])
    ddls = [source_ddl("t", "events", settings, KafkaRead()),
            source_ddl("t", "events", settings, KafkaRead(), keyed=True),
            sink_ddl("t", "payloads", settings, headers=True)]
    for ddl in ddls:
        assert "'properties.security.protocol' = 'SASL_PLAINTEXT'" in ddl
        assert "'properties.sasl.jaas.config'" in ddl


# ------------------------------------------------------------------------------ redis


def test_redis_client_carries_auth_and_tls_without_showing_the_password(tmp_path):
    path = tmp_path / "redis-pw"
    path.write_text(SECRET)
    server = RedisSettings(host="cache", port=6380, db=2, username="job",
                           password_file=str(path), ssl=True, ssl_cafile="/ca.pem")
    client = redis_client(server, socket_timeout=2)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["host"] == "cache" and kwargs["port"] == 6380 and kwargs["db"] == 2
    assert kwargs["ssl_ca_certs"] == "/ca.pem" and kwargs["socket_timeout"] == 2
    assert kwargs["credential_provider"].get_credentials() == ("job", SECRET)
    assert SECRET not in repr(client) and SECRET not in repr(kwargs)
    client.close()


def test_the_redis_password_is_read_again_for_each_new_connection(tmp_path):
    path = tmp_path / "pw"
    path.write_text("first")
    provider = redis_client(RedisSettings(password_file=str(path))).connection_pool \
        .connection_kwargs["credential_provider"]
    assert provider.get_credentials() == ("first",)
    path.write_text("second\n")                     # rotated
    assert provider.get_credentials() == ("second",)


def test_redis_without_auth_sends_no_credentials():
    client = redis_client(RedisSettings())
    assert client.connection_pool.connection_kwargs.get("credential_provider") is None
    client.close()


# ------------------------------------------------------------------------------ one factory


CLIENTS = re.compile(r"\b(KafkaProducer|KafkaConsumer|KafkaAdminClient|redis\.Redis|"
                     r"smtplib\.SMTP(?:_SSL)?)\(")


def _arguments(text: str, start: int) -> str:
    """The text of a call's arguments, from just after its "(" to the matching ")"."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def test_every_client_is_built_through_the_one_mapping():
    """No Kafka, Redis or SMTP client in pipelines/ or runners/ opens without the security
    settings: Kafka clients take kafka_client_config(...), Redis and SMTP ones are made only
    in connections.py."""
    offenders = []
    for path in sorted([*ROOT.glob("pipelines/*.py"), *ROOT.glob("runners/*.py")]):
        if path.name == "connections.py":
            continue
        text = path.read_text()
        for m in CLIENTS.finditer(text):
            kafka = m.group(1).startswith("Kafka")
            if not kafka or "kafka_client_config(" not in _arguments(text, m.end()):
                line = text.count("\n", 0, m.start()) + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line} {m.group(1)}")
    assert offenders == []
