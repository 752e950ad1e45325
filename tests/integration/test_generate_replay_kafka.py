"""`personalize generate` and `personalize replay` on the real local Kafka: counts read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from runners import SHIPPED_DATA as SHARED_DATA
from runners.cli import main
from runners.kafka_io import consume, topic_sizes
from transforms.codec import decode_dead_letter, decode_event, decode_profile
from transforms.model import BehaviourEvent, CustomerProfile, DeadLetter, Origin
from transforms.settings import CoreSettings

pytestmark = pytest.mark.integration

CORE = CoreSettings()


def topics_args(kafka: str, new_topic: Callable[..., str]) -> tuple[dict[str, str], list[str]]:
    topics = {name: new_topic(name, partitions=2) for name in ("events", "profiles", "dead")}
    args = [
        "--set", f"kafka.bootstrap={kafka}",
        "--set", f"kafka.events_topic={topics['events']}",
        "--set", f"kafka.profiles_topic={topics['profiles']}",
        "--set", f"kafka.dead_letters_topic={topics['dead']}",
    ]
    return topics, args


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, int]:
    assert main(argv) == 0
    result: dict[str, int] = json.loads(capsys.readouterr().out)
    return result


def test_generate_to_kafka(
    kafka: str, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topics, settings = topics_args(kafka, new_topic)
    counts = run_json(capsys, [
        "generate", *settings, "--to", "kafka", "--events", "600", "--customers", "80",
        "--rate", "2", "--seed", "11", "--duplicate-ratio", "0.05", "--malformed-ratio", "0.05",
        "--confluent",
    ])
    on_events = counts["events"] + counts["duplicates"] + counts["malformed"]
    assert counts["written"] == on_events + counts["profiles"] and counts["failed"] == 0
    assert topic_sizes(kafka, [topics["events"], topics["profiles"]]) == {
        topics["events"]: on_events, topics["profiles"]: counts["profiles"],
    }
    records = consume(kafka, topics["events"], on_events)
    decoded = [decode_event(r.value, Origin(r.topic, r.partition, r.offset), None, CORE, 0)
               for r in records]
    assert sum(isinstance(d, DeadLetter) for d in decoded) == counts["malformed"]
    assert all(r.key == d.customer_id.encode() for r, d in zip(records, decoded, strict=True)
               if isinstance(d, BehaviourEvent))
    profiles = consume(kafka, topics["profiles"], counts["profiles"])
    assert all(isinstance(decode_profile(r.value, Origin(r.topic), CORE, 0), CustomerProfile)
               for r in profiles)


def test_generate_to_kafka_in_real_time(
    kafka: str, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, settings = topics_args(kafka, new_topic)
    counts = run_json(capsys, [
        "generate", *settings, "--to", "kafka", "--events", "30", "--rate", "20", "--realtime",
    ])
    assert counts["events"] == 30
    assert 0.5 <= counts["seconds"] < 30  # 30 events at 20/s of event time span about 1.5 s


def test_replay_rees46_to_kafka(
    kafka: str, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    topics, settings = topics_args(kafka, new_topic)
    data = tmp_path / "with-bad-rows.csv"
    lines = SHARED_DATA.read_text().splitlines()[:3001]
    negative = lines[1].replace(",35.79,", ",-35.79,")
    data.write_text("\n".join([*lines, "not,a,row", negative]) + "\n")
    summary = run_json(capsys, [
        "replay", *settings, "--input", str(data), "--format", "rees46", "--to", "kafka",
    ])
    assert summary["events"] == 3000 and summary["dead_letters"] == 2 and summary["failed"] == 0
    assert topic_sizes(kafka, topics.values()) == {
        topics["events"]: 3000, topics["profiles"]: summary["profiles"], topics["dead"]: 2,
    }
    dead = sorted((decode_dead_letter(r.value) for r in consume(kafka, topics["dead"], 2)),
                  key=lambda d: d.origin.offset)
    assert [(d.origin.offset, d.reason) for d in dead] == [(3002, "decode_error"),
                                                           (3003, "invalid_value")]
    assert dead[0].raw == b"not,a,row" and dead[0].origin.topic == str(data)
