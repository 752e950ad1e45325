"""The Kafka tables of the PyFlink job (pure: the DDL text)."""

from __future__ import annotations

from pipelines.flink_kafka import KafkaRead, sink_ddl, source_ddl
from transforms.settings import Settings


def test_sources_carry_the_origin_and_sinks_write_key_value_and_headers():
    s = Settings()
    src = source_ddl("events_in", "ev", s, KafkaRead(stop={("ev", 0): 5, ("pr", 0): 1}))
    for column in ("`topic` STRING", "`partition` INT", "`offset` BIGINT"):
        assert f"{column} METADATA" in src
    assert "'scan.bounded.specific-offsets' = 'partition:0,offset:5'" in src
    assert "'properties.isolation.level' = 'read_committed'" in src
    sink = sink_ddl("payload_out", "pay", s, headers=True)
    assert "`headers` MAP<STRING, BYTES> METADATA" in sink
    assert "'sink.delivery-guarantee' = 'exactly-once'" in sink
    assert "'sink.transactional-id-prefix' = 'personalize-payload_out'" in sink
    at_least_once = Settings().with_overrides(["flink.checkpoint_mode=at_least_once"])
    assert "'at-least-once'" in sink_ddl("audit_out", "aud", at_least_once, headers=False)


def test_the_job_config_turns_on_what_the_settings_ask_for():
    from pipelines.flink_pipeline import flink_config

    plain = flink_config(Settings(), local=False)
    assert plain["execution.buffer-timeout.interval"] == "100 ms"
    assert plain["execution.checkpointing.incremental"] == "false"
    s = Settings().with_overrides(["flink.buffer_timeout=10ms", "flink.state_backend=rocksdb"])
    conf = flink_config(s, local=False)
    assert conf["execution.buffer-timeout.interval"] == "10 ms"
    assert conf["execution.checkpointing.incremental"] == "true"
