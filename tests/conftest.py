"""Session fixtures for the integration tier: the real Kafka, Redis and Flink cluster.

Each fixture makes its service healthy, starting it through runners.services if it is not
already running, and fails (never skips) with the command to start it by hand if it cannot.
What a test session starts is stopped by the last concurrent session to finish; services
started by hand (`personalize services up`) are left running. Other engineers run tests against
the same services at the same time: use `new_topic` / `unique_name` for anything you create.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from runners import services
from transforms.settings import Settings, load_settings

# Which service each fixture needs: collection tells which services a session will use, so
# the first one needed launches them all side by side.
_FIXTURE_SERVICE = {
    "kafka": "kafka",
    "new_topic": "kafka",
    "redis_client": "redis",
    "flink_cluster": "flink",
}
_WANTED = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember the services the selected tests use (nothing is deselected or skipped)."""
    used = {
        service
        for item in items
        for fixture, service in _FIXTURE_SERVICE.items()
        if fixture in getattr(item, "fixturenames", ())
    }
    config.stash[_WANTED] = sorted(used)


def unique_name(prefix: str) -> str:
    """`prefix` with a random suffix: topic names, Redis keys, group ids of one test."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def prefix(redis_client) -> Iterator[str]:
    """A Redis key prefix of this test only; its keys are deleted afterwards."""
    p = unique_name("test") + ":"
    yield p
    keys = list(redis_client.scan_iter(match=p + "*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def service_settings() -> Settings:
    """The settings the services run with (defaults, overridable by PERSONALIZE_* variables)."""
    return load_settings(None, os.environ)


@pytest.fixture(scope="session")
def services_lease(service_settings: Settings) -> Iterator[services.Lease]:
    """This session's hold on the services; released (and maybe stopped) at the end."""
    lease = services.Lease(service_settings)
    yield lease
    lease.release()


def _need(lease: services.Lease, name: str, config: pytest.Config) -> None:
    try:
        lease.need(name, also=config.stash.get(_WANTED, []))
    except services.ServiceError as exc:
        pytest.fail(
            f"{name} is not running and could not be started:\n{exc}\n\n"
            f"Start it by hand with `runners/bootstrap.sh && "
            f".venv/bin/personalize services up --only {name}` and see .state/{name}/logs/.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def kafka(
    services_lease: services.Lease, service_settings: Settings, pytestconfig: pytest.Config
) -> str:
    """The bootstrap address of a healthy local Kafka ("127.0.0.1:9092")."""
    _need(services_lease, "kafka", pytestconfig)
    return service_settings.kafka.bootstrap


@pytest.fixture(scope="session")
def redis_client(
    services_lease: services.Lease, service_settings: Settings, pytestconfig: pytest.Config
) -> Iterator:
    """A redis.Redis client of a healthy local redis-server (decode_responses=False)."""
    import redis

    _need(services_lease, "redis", pytestconfig)
    client = redis.Redis(
        host=service_settings.redis.host,
        port=service_settings.redis.port,
        db=service_settings.redis.db,
    )
    yield client
    client.close()


@pytest.fixture(scope="session")
def flink_cluster(
    services_lease: services.Lease, service_settings: Settings, pytestconfig: pytest.Config
) -> services.FlinkCluster:
    """A healthy standalone Flink cluster: `.submit(py_file, args, jars=...)`, `.wait_job`,
    `.jobs()`, `.cancel`, `.endpoint` (REST)."""
    _need(services_lease, "flink", pytestconfig)
    return services.FlinkCluster(service_settings)


@pytest.fixture
def new_topic(kafka: str, service_settings: Settings) -> Iterator[Callable[..., str]]:
    """Factory: `new_topic("orders", partitions=3)` creates a uniquely named topic (deleted
    after the test) and returns its name."""
    from kafka.admin import KafkaAdminClient

    created: list[str] = []

    def make(prefix: str = "it", partitions: int = 1) -> str:
        name = unique_name(prefix)
        services.ensure_topics(kafka, [name], partitions)
        created.append(name)
        return name

    yield make
    if created:
        admin = KafkaAdminClient(bootstrap_servers=kafka, client_id="tests-cleanup")
        try:
            admin.delete_topics(created, raise_errors=False)
        finally:
            admin.close()
