"""Apache Kafka, single-node KRaft (broker + controller in one JVM), from the jars in .jars/kafka.

.state/kafka/server.properties    generated on every start from the settings
.state/kafka/data/                log dirs; formatted once (meta.properties) with a new cluster id
.state/kafka/logs/                server.log (log4j2) and kafka.log (the JVM's stdout/stderr)
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipelines.connections import kafka_client_config
from runners.services._proc import ServiceError, host_port, port_open, project_path, spawn
from runners.services._service import LocalService
from transforms.settings import KafkaSettings, Settings

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

log = logging.getLogger(__name__)

# Error codes of CreateTopics that mean "fine": none, and TOPIC_ALREADY_EXISTS (a concurrent
# creator won the race).
_TOPIC_OK = {0, 36}

_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def _admin(kafka: KafkaSettings | str, timeout_ms: int = 10_000) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        **kafka_client_config(kafka),
        client_id="personalize-services",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )


def ensure_topics(
    kafka: KafkaSettings | str,
    names: Iterable[str],
    partitions: int,
    timeout_s: float = 30.0,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics in `names` that do not exist yet (replication 1, topic `configs` if
    given), and wait until every one of them has a leader for each partition. Returns the names
    it created.

    Safe to call concurrently for the same names. Existing topics are left as they are, even
    with another partition count.
    """
    from kafka.errors import KafkaError

    wanted = list(dict.fromkeys(names))
    admin = _admin(kafka, int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            spec = {
                n: {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}
                for n in missing
            }
            result = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
            failed = [t for t in result["topics"] if t["error_code"] not in _TOPIC_OK]
            if failed:
                raise ServiceError(
                    "could not create topics: "
                    + "; ".join(
                        f"{t['name']}: {t.get('error_message') or t['error_code']}" for t in failed
                    )
                )
        admin.wait_for_topics(wanted, timeout_ms=int(timeout_s * 1000))
        return missing
    except KafkaError as exc:
        where = kafka if isinstance(kafka, str) else kafka.bootstrap
        raise ServiceError(f"kafka at {where}: {exc}") from exc
    finally:
        admin.close()


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's Uuid)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class Kafka(LocalService):
    """The broker of the job's topics on settings.kafka.bootstrap."""

    name = "kafka"
    start_timeout = 90.0
    port_settings = "kafka.bootstrap, kafka.controller_port"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.host, self.port = host_port(settings.kafka.bootstrap)
        self.jars = project_path(settings.paths.jars_dir) / "kafka"
        self.data = self.home / "data"
        self.config = self.home / "server.properties"

    @property
    def endpoint(self) -> str:
        """The bootstrap address."""
        return f"{self.host}:{self.port}"

    @property
    def ports(self) -> list[tuple[str, int]]:
        """Broker and controller listeners."""
        return [(self.host, self.port), (self.host, self.settings.kafka.controller_port)]

    @property
    def topics(self) -> list[str]:
        """The job's topics, created on every `up`."""
        k = self.settings.kafka
        return [
            k.events_topic,
            k.profiles_topic,
            k.payloads_topic,
            k.dead_letters_topic,
            k.audit_topic,
            k.outcomes_topic,
            k.catalog_changes_topic,
        ]

    def healthy(self) -> bool:
        """A metadata request succeeds and lists at least one broker."""
        if not port_open(self.host, self.port):
            return False
        from kafka.errors import KafkaError

        try:
            admin = _admin(self.endpoint, 3000)
        except (KafkaError, OSError):
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def _java_cmd(self, main: str, *args: str, heap: str) -> list[str]:
        java = shutil.which("java")
        if not java:
            raise ServiceError("kafka: java not found: run runners/bootstrap.sh (installs a JRE)")
        if not any(self.jars.glob("kafka_2.13-*.jar")):
            raise ServiceError(f"kafka: jars missing in {self.jars}: run runners/bootstrap.sh")
        return [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs}",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.jars}/*",
            main,
            *args,
        ]

    def _write_config(self) -> None:
        k = self.settings.kafka
        controller = f"{self.host}:{k.controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static single-voter quorum: no `--standalone` bootstrap step needed on format.
            "controller.quorum.voters": f"1@{controller}",
            "listeners": f"PLAINTEXT://{self.endpoint},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.endpoint}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": str(k.partitions),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            # Fewer internal partitions than the default 50: the first consumer group and the
            # first transaction come up in a second instead of several.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Flink's exactly-once KafkaSink asks for 1 h transactions; the default cap is 15 min.
            "transaction.max.timeout.ms": "3600000",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "24",
        }
        self.config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2)

    def _format_storage(self) -> None:
        """Format the log dir once, with a new cluster id (KRaft refuses an unformatted one)."""
        if (self.data / "meta.properties").exists():
            return
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.config),
            "--ignore-formatted",
            heap="256m",
        )
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise ServiceError(f"kafka: formatting {self.data} failed:\n{done.stdout}{done.stderr}")

    def launch(self) -> None:
        """Write the config, format storage on first start, start `kafka.Kafka`."""
        self._write_config()
        self._format_storage()
        cmd = self._java_cmd("kafka.Kafka", str(self.config), heap=self.settings.kafka.heap)
        proc = spawn(cmd, self.main_log, cwd=self.home)
        (self.home / "kafka.pid").write_text(f"{proc.pid}\n")

    def after_start(self) -> None:
        """Create the job's topics with settings.kafka.partitions."""
        created = ensure_topics(self.endpoint, self.topics, self.settings.kafka.partitions)
        if created:
            log.info("kafka: created topics %s", ", ".join(created))
