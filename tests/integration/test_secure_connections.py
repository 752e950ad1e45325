"""Secure connections on real servers started by these tests on free loopback ports: a
redis-server with a password (and one with TLS only), aiosmtpd requiring STARTTLS and AUTH
(and one speaking SMTPS). Certificates are self-signed, made here with openssl. The job's own
Kafka and Redis (fixtures) carry `personalize deliver`'s input and ledger."""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from pipelines.connections import redis_client
from pipelines.feature_store import RedisFeatureStore
from pipelines.redis_catalog import RedisCatalog, load_catalog
from runners.cli import main
from runners.services._proc import port_open
from runners.services._redis import Redis
from tests.builders import T0
from tests.conftest import unique_name
from tests.integration.test_deliver import committed, deliver, free_port, make_payload, produce
from transforms.catalog import CatalogItem
from transforms.model import FeatureSnapshot
from transforms.settings import Settings, load_settings

pytestmark = pytest.mark.integration

# A password with a space, quotes and a backslash: it must survive redis.conf and JAAS quoting.
PASSWORD = 'Tr0ub4dor &3 "q\\x'
PW_ENV = "PERSONALIZE_TEST_SECRET"
SHOE = CatalogItem("p1", "Shoe", "shoes", "acme", 59.0, "https://s/p1", None)


def self_signed(home: Path) -> tuple[Path, Path]:
    """(cert, key) in `home`: self-signed for 127.0.0.1, so the cert is also the CA file; the
    key unencrypted PKCS#8."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl not installed (apt-get install openssl)"
    cert, key = home / "cert.pem", home / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """(cert, key) of self_signed."""
    return self_signed(tmp_path_factory.mktemp("tls"))


def secured(settings: Settings, *pairs: str) -> Settings:
    return settings.with_overrides(pairs)


# ------------------------------------------------------------------------------ redis AUTH


@pytest.fixture(params=["requirepass", "acl-user"])
def auth_redis(request, tmp_path, monkeypatch) -> Iterator[Settings]:
    """The project's own redis service (runners/services/_redis.py) on a free port, with the
    password of settings.redis (and an ACL user): its health check must AUTH to see it up."""
    monkeypatch.setenv(PW_ENV, PASSWORD)
    pairs = [f"redis.port={free_port()}", f"paths.state_dir={tmp_path / 'state'}",
             f"redis.password_env={PW_ENV}", "redis.key_prefix=secure:"]
    if request.param == "acl-user":
        pairs.append("redis.username=personalize")
    settings = load_settings(None, {}, pairs)
    service = Redis(settings)
    service.start()
    try:
        service.wait_ready(20)
        yield settings
    finally:
        service.stop(10)


def snapshot() -> FeatureSnapshot:
    return FeatureSnapshot("c1", T0, {"views_1h": 3}, 42.0, "browse_intensity")


def store_round_trip(settings) -> None:
    """A snapshot written through the feature store of `settings` reads back."""
    store = RedisFeatureStore.from_settings(settings)
    store.write(snapshot())
    store.flush()
    assert store.read("c1")["views_1h"] == 3
    store.close()


def test_feature_store_and_catalog_work_with_the_password(auth_redis):
    store_round_trip(auth_redis)
    client = redis_client(auth_redis.redis)
    assert load_catalog(client, [SHOE], auth_redis.redis.key_prefix) == 1
    client.close()
    assert RedisCatalog.from_settings(auth_redis).get("p1") == SHOE


def test_without_the_password_redis_refuses_with_a_clear_error(auth_redis, tmp_path, capsys):
    bare = secured(auth_redis, "redis.password_env=", "redis.username=")
    with pytest.raises(redis.AuthenticationError) as no_auth:
        RedisCatalog.from_settings(bare).get("p1")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-" + PASSWORD)
    store = RedisFeatureStore.from_settings(
        secured(auth_redis, "redis.password_env=", f"redis.password_file={wrong}"))
    with pytest.raises(redis.AuthenticationError) as bad_auth:
        store.write(snapshot())
        store.flush()
    assert str(no_auth.value) == "Authentication required."
    assert "invalid username-password pair" in str(bad_auth.value)
    assert "Tr0ub4dor" not in str(bad_auth.value)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text('{"product_id": "p1", "category": "shoes"}\n')
    r = auth_redis.redis
    code = main(["catalog", "load", "--input", str(catalog), "--set", f"redis.port={r.port}",
                 "--set", f"redis.password_file={wrong}", "--set", f"redis.username={r.username}"])
    err = capsys.readouterr().err
    assert code == 1 and "check redis.username, redis.password_env" in err
    assert "Tr0ub4dor" not in err


# ------------------------------------------------------------------------------ redis TLS


@pytest.fixture
def tls_redis(certificate, tmp_path, monkeypatch) -> Iterator[Settings]:
    """redis-server with TLS only (--port 0) and a password, started and stopped here."""
    server = shutil.which("redis-server")
    assert server, "redis-server not installed: run runners/bootstrap.sh"
    cert, key = certificate
    port = free_port()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
         str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "redis-server (TLS) did not listen in 15s"
            time.sleep(0.1)
        monkeypatch.setenv(PW_ENV, PASSWORD)
        yield load_settings(None, {}, [
            f"redis.port={port}", f"redis.password_env={PW_ENV}", "redis.ssl=true",
            f"redis.ssl_cafile={cert}", "redis.key_prefix=secure:"])
    finally:
        proc.terminate()
        proc.wait(10)


def test_feature_store_over_tls_with_auth(tls_redis):
    store_round_trip(tls_redis)
    with pytest.raises(redis.ConnectionError):                 # plain text to a TLS port
        RedisCatalog.from_settings(secured(tls_redis, "redis.ssl=false")).get("p1")
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        RedisCatalog.from_settings(secured(tls_redis, "redis.ssl_cafile=")).get("p1")


# ------------------------------------------------------------------------------ SMTP


def _tls(server, session) -> bool:
    """Whether the session runs over TLS: STARTTLS (session.ssl) or SMTPS (the transport)."""
    return session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None


@dataclass
class Mailroom:
    """aiosmtpd handler and authenticator: what arrived, and how each step was protected."""

    accepted: list[tuple[bool, bool]] = field(default_factory=list)  # (tls, authenticated)
    commands: list[tuple[str, bool]] = field(default_factory=list)   # (command, over tls)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.commands.append(("EHLO", _tls(server, session)))
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        self.commands.append(("MAIL", _tls(server, session)))
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.accepted.append((_tls(server, session), bool(session.authenticated)))
        return "250 OK"

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.commands.append(("AUTH", _tls(server, session)))
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"shop" and (
            auth_data.password == PASSWORD.encode())
        return AuthResult(success=ok)


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


@pytest.fixture
def smtp_server(certificate) -> Iterator:
    """Start an aiosmtpd server: `start(**smtp_kwargs) -> (mailroom, port)`; stopped after."""
    started: list[Controller] = []

    def start(**kwargs) -> tuple[Mailroom, int]:
        room = Mailroom()
        port = free_port()
        implicit = kwargs.pop("implicit", False)
        if implicit:
            kwargs["ssl_context"] = server_context(certificate)
            kwargs["server_hostname"] = "127.0.0.1"
        elif kwargs.pop("starttls", False):
            kwargs["tls_context"] = server_context(certificate)
        controller = Controller(room, hostname="127.0.0.1", port=port, authenticator=room,
                                **kwargs)
        controller.start()
        started.append(controller)
        return room, port

    yield start
    for controller in started:
        controller.stop()


def tls_settings(certificate, mode: str = "starttls", user: bool = True) -> tuple[str, ...]:
    pairs = [f"deliver.smtp_tls={mode}", f"deliver.smtp_cafile={certificate[0]}"]
    if user:
        pairs += ["deliver.smtp_username=shop", f"deliver.smtp_password_env={PW_ENV}"]
    return tuple(x for pair in pairs for x in ("--set", pair))


def test_deliver_over_starttls_with_auth_and_never_without(
    kafka, new_topic, prefix, smtp_server, certificate, capsys, caplog, monkeypatch
):
    monkeypatch.setenv(PW_ENV, PASSWORD)
    room, port = smtp_server(starttls=True, require_starttls=True, auth_required=True)
    topic, group = new_topic("payloads"), unique_name("deliver")
    p = make_payload()
    produce(kafka, topic, [p])
    run = dict(topic=topic, group=group, prefix=prefix, port=port, now_ms=T0, idle=2.0)

    plain = deliver(capsys, **run)                                   # no TLS, no AUTH
    no_user = deliver(capsys, **run, extra=tls_settings(certificate, user=False))
    for summary in (plain, no_user):
        assert (summary["delivered"], summary["rejected"], summary["retrying"]) == (0, 0, 1)
    assert room.accepted == [] and committed(kafka, topic, group) in (None, 0)

    with caplog.at_level("DEBUG"):
        sent = deliver(capsys, **run, extra=("-v", *tls_settings(certificate)))
    assert (sent["read"], sent["delivered"]) == (1, 1)
    assert room.accepted == [(True, True)]                           # over TLS, authenticated
    assert ("AUTH", True) in room.commands and ("AUTH", False) not in room.commands
    assert committed(kafka, topic, group) == 1
    assert "Tr0ub4dor" not in caplog.text


def test_a_wrong_password_sends_nothing_and_loses_nothing(
    kafka, new_topic, prefix, smtp_server, certificate, capsys, caplog, monkeypatch
):
    monkeypatch.setenv(PW_ENV, "not-" + PASSWORD)
    room, port = smtp_server(starttls=True, require_starttls=True, auth_required=True)
    topic, group = new_topic("payloads"), unique_name("deliver")
    produce(kafka, topic, [make_payload()])
    with caplog.at_level("DEBUG"):
        summary = deliver(capsys, topic=topic, group=group, prefix=prefix, port=port, now_ms=T0,
                          idle=2.0, extra=tls_settings(certificate))
    assert (summary["delivered"], summary["rejected"], summary["retrying"]) == (0, 0, 1)
    assert room.accepted == [] and ("MAIL", True) not in room.commands
    assert "Tr0ub4dor" not in caplog.text and "Tr0ub4dor" not in capsys.readouterr().err


def test_starttls_required_sends_nothing_in_clear_to_a_server_without_it(
    kafka, new_topic, prefix, smtp_server, certificate, capsys, monkeypatch
):
    monkeypatch.setenv(PW_ENV, PASSWORD)
    # A server that offers no STARTTLS and would even take AUTH in clear.
    room, port = smtp_server(auth_require_tls=False)
    topic, group = new_topic("payloads"), unique_name("deliver")
    produce(kafka, topic, [make_payload()])
    summary = deliver(capsys, topic=topic, group=group, prefix=prefix, port=port, now_ms=T0,
                      idle=2.0, extra=tls_settings(certificate))
    assert (summary["delivered"], summary["retrying"]) == (0, 1)
    assert {command for command, _ in room.commands} == {"EHLO"}      # no AUTH, no MAIL


def test_deliver_over_implicit_tls(
    kafka, new_topic, prefix, smtp_server, certificate, capsys, monkeypatch
):
    monkeypatch.setenv(PW_ENV, PASSWORD)
    # aiosmtpd counts only STARTTLS as TLS for AUTH; this whole session is TLS.
    room, port = smtp_server(implicit=True, auth_required=True, auth_require_tls=False)
    topic, group = new_topic("payloads"), unique_name("deliver")
    produce(kafka, topic, [make_payload()])
    summary = deliver(capsys, topic=topic, group=group, prefix=prefix, port=port, now_ms=T0,
                      idle=2.0, extra=tls_settings(certificate, mode="implicit"))
    assert summary["delivered"] == 1 and room.accepted == [(True, True)]


def test_auth_without_tls_is_refused_before_connecting(capsys):
    code = main(["deliver", "--until-idle", "1", "--set", "deliver.smtp_username=shop",
                 "--set", f"deliver.smtp_password_env={PW_ENV}", "--set",
                 f"deliver.smtp_port={free_port()}", "--set",
                 f"kafka.payloads_topic={unique_name('none')}"])
    assert code == 2 and "never sent in clear" in capsys.readouterr().err

