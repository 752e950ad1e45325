"""Kafka SASL on a second, real broker started by this module on free loopback ports: a
PLAINTEXT listener (to set it up) and a SASL_PLAINTEXT one (PLAIN and SCRAM-SHA-512), which the
project's clients reach through settings.kafka and kafka_client_config only."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from pipelines.connections import jaas_quoted, kafka_client_config, open_producer
from runners.kafka_io import consume, topic_sizes
from runners.services._kafka import Kafka, ensure_topics
from runners.services._proc import ServiceError
from tests.integration.test_deliver import free_port
from tests.integration.test_secure_connections import self_signed
from transforms.settings import KafkaSettings, Settings, load_settings

pytestmark = pytest.mark.integration

# Space, quotes and a backslash: JAAS quoting on the broker and in the clients must agree.
PASSWORD = 'Tr0ub4dor &3 "q\\x'
PW_ENV = "PERSONALIZE_TEST_KAFKA_SECRET"
USER = "personalize"


class SaslBroker(Kafka):
    """The project's local broker (runners/services/_kafka.py) plus two listeners:
    SASL_PLAINTEXT, and SASL_SSL that also wants a client certificate (the key and certificate
    in `tls`)."""

    def __init__(self, settings: Settings, sasl_port: int, tls_port: int, tls: Path) -> None:
        super().__init__(settings)
        self.sasl_port, self.tls_port, self.tls = sasl_port, tls_port, tls

    @property
    def ports(self) -> list[tuple[str, int]]:
        return [*super().ports, (self.host, self.sasl_port), (self.host, self.tls_port)]

    @property
    def topics(self) -> list[str]:
        return []

    def _write_config(self) -> None:
        super()._write_config()
        extra = f"SASL_PLAINTEXT://{self.host}:{self.sasl_port},SASL_SSL://{self.host}:{self.tls_port}"
        lines = []
        for line in self.config.read_text().splitlines():
            key, value = line.split("=", 1)
            if key in ("listeners", "advertised.listeners"):
                value = value.replace(f"PLAINTEXT://{self.endpoint}",
                                      f"PLAINTEXT://{self.endpoint},{extra}")
            elif key == "listener.security.protocol.map":
                value += ",SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
            lines.append(f"{key}={value}")
        plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                 f"user_{USER}={jaas_quoted(PASSWORD)};")
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        lines.append("sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512")
        for listener in ("sasl_plaintext", "sasl_ssl"):
            prefix = f"listener.name.{listener}"
            lines += [
                # A .properties value: its backslashes are escapes.
                f"{prefix}.plain.sasl.jaas.config={plain.replace(chr(92), chr(92) * 2)}",
                f"{prefix}.scram-sha-512.sasl.jaas.config={scram}",
            ]
        lines += [
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={self.tls / 'server.pem'}",
            "listener.name.sasl_ssl.ssl.truststore.type=PEM",
            f"listener.name.sasl_ssl.ssl.truststore.location={self.tls / 'cert.pem'}",
            "listener.name.sasl_ssl.ssl.client.auth=required",
        ]
        self.config.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory) -> Iterator[SaslBroker]:
    """A broker of this module only, its SCRAM user created; stopped at the end."""
    from kafka.admin import KafkaAdminClient, UserScramCredentialUpsertion

    home = tmp_path_factory.mktemp("sasl-kafka")
    tls = home / "tls"
    tls.mkdir()
    cert, key = self_signed(tls)
    (tls / "server.pem").write_text(key.read_text() + cert.read_text())   # Java: key + chain
    ports = [free_port() for _ in range(4)]
    assert len(set(ports)) == 4
    plain_port, controller, sasl_port, tls_port = ports
    settings = load_settings(None, {}, [
        f"kafka.bootstrap=127.0.0.1:{plain_port}", f"kafka.controller_port={controller}",
        f"paths.state_dir={home}", "kafka.heap=384m"])
    broker = SaslBroker(settings, sasl_port, tls_port, tls)
    broker.start()
    try:
        deadline = time.monotonic() + 120
        while not broker.healthy():
            assert time.monotonic() < deadline, f"the SASL broker is not up: see {broker.logs}"
            time.sleep(0.5)
        admin = KafkaAdminClient(bootstrap_servers=broker.endpoint)
        try:
            errors = admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(USER, "SCRAM-SHA-512", PASSWORD)])
            assert not any(errors.values()), errors
        finally:
            admin.close()
        yield broker
    finally:
        broker.stop(30)


def sasl_settings(port: int, mechanism: str, **kw: str) -> KafkaSettings:
    return KafkaSettings(**{
        "bootstrap": f"127.0.0.1:{port}", "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism, "sasl_username": USER, "sasl_password_env": PW_ENV, **kw})


def tls_settings(broker: SaslBroker, mechanism: str) -> KafkaSettings:
    """SASL_SSL with the broker's certificate as CA and as client certificate; the key file
    holds key and certificate, as the Java client wants it."""
    return sasl_settings(broker.tls_port, mechanism, security_protocol="SASL_SSL",
                         ssl_cafile=str(broker.tls / "cert.pem"),
                         ssl_certfile=str(broker.tls / "cert.pem"),
                         ssl_keyfile=str(broker.tls / "server.pem"))


@pytest.mark.parametrize(("mechanism", "tls"), [
    ("PLAIN", False), ("SCRAM-SHA-512", False), ("PLAIN", True), ("SCRAM-SHA-512", True)])
def test_producer_admin_and_consumer_over_sasl(sasl_broker, mechanism, tls, monkeypatch):
    monkeypatch.setenv(PW_ENV, PASSWORD)
    kafka = (tls_settings(sasl_broker, mechanism) if tls
             else sasl_settings(sasl_broker.sasl_port, mechanism))
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(kafka, [topic], 2) == [topic]              # admin client
    producer = open_producer(kafka)
    for i in range(10):
        producer.send(topic, key=b"c%d" % i, value=b"v%d" % i)
    producer.flush()
    producer.close()
    assert topic_sizes(kafka, [topic]) == {topic: 10}
    assert sorted(r.value for r in consume(kafka, topic, 10)) == sorted(
        b"v%d" % i for i in range(10))


def test_a_wrong_password_is_refused_without_showing_it(sasl_broker, monkeypatch, caplog):
    monkeypatch.setenv(PW_ENV, "not-" + PASSWORD)
    with caplog.at_level("DEBUG", logger="kafka"), pytest.raises(
            (KafkaError, ServiceError)) as info:
        ensure_topics(sasl_settings(sasl_broker.sasl_port, "PLAIN"), ["never"], 1, timeout_s=5)
    assert "Tr0ub4dor" not in str(info.value) and "Tr0ub4dor" not in caplog.text
    # kafka-python only sees the broker hang up; the broker says why.
    assert "Authentication failed" in (sasl_broker.logs / "server.log").read_text()


@pytest.mark.engine
def test_the_flink_job_reads_and_writes_through_sasl_ssl(sasl_broker, monkeypatch, tmp_path):
    """SASL_SSL with SCRAM and a client certificate: the connector's tables get the login
    (shaded JAAS module, quoted password), PEM trust and key stores from flink_kafka_options;
    the job's kafka-python offset lookups get the same from kafka_client_config."""
    from kafka import KafkaConsumer

    from pipelines.flink_pipeline import run_kafka
    from runners.services import kafka_connector_jar
    from tests.pipelines.test_flink_pipeline import kafka_settings, produce
    from tests.pipelines.test_parity_flink import journeys
    from transforms.codec import decode_payload
    from transforms.model import DeadLetter

    monkeypatch.setenv(PW_ENV, PASSWORD)
    secure = tls_settings(sasl_broker, "SCRAM-SHA-512")
    s = kafka_settings(secure.bootstrap, **{
        f"kafka.{key}": str(getattr(secure, key)) for key in (
            "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password_env",
            "ssl_cafile", "ssl_certfile", "ssl_keyfile")})
    k = s.kafka
    items = [i for i in journeys(k.group_id) if not isinstance(i, DeadLetter)]
    produce(s, items)
    # A bound above the input: every record there is (the bound is split over partitions).
    options = argparse.Namespace(runner="flink", max_events=10 * len(items), until_idle=None,
                                 from_beginning=True, savepoint=None, detached=False)
    assert run_kafka(s, [kafka_connector_jar(s)], options) == 0
    consumer = KafkaConsumer(k.payloads_topic, **kafka_client_config(k), group_id=None,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             consumer_timeout_ms=3000)
    try:
        triggers = sorted(decode_payload(r.value).trigger.type for r in consumer)
    finally:
        consumer.close()
    # The reference runner's emails of the same journeys (cart, browse, the buyer's post-purchase
    # and win-back).
    from pipelines.reference import run_replay

    run_replay(iter(items), s, tmp_path / "ref")
    payloads = (tmp_path / "ref" / "payloads.jsonl").read_text().splitlines()
    expected = sorted(json.loads(line)["trigger"]["type"] for line in payloads)
    assert "cart_abandonment" in expected and triggers == expected
