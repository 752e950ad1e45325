from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.cli import main
from runners.generate import parse_instant
from runners.kafka_io import read_records
from runners.replay import read_record_log
from runners.traffic import DEFAULT_START
from transforms.model import BehaviourEvent, CustomerProfile, DeadLetter
from transforms.readers import REES46_COLUMNS, read_events_jsonl
from transforms.settings import CoreSettings


def generate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, int]:
    # A low rate keeps the generator's warm-up (15 min of event time) short.
    argv = ["generate", "--events", "400", "--customers", "50", "--rate", "2", "--seed", "4"]
    assert main([*argv, *args]) == 0
    counts: dict[str, int] = json.loads(capsys.readouterr().out)
    return counts


def test_generate_jsonl_counts_match_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.jsonl"
    counts = generate(capsys, "--to", "file", "--format", "jsonl", "--out", str(out),
                      "--duplicate-ratio", "0.1", "--malformed-ratio", "0.05")
    items = list(read_events_jsonl(out))
    assert counts["events"] + counts["malformed"] == 400
    assert counts["written"] == len(items) == 400 + counts["duplicates"] + counts["profiles"]
    assert sum(isinstance(i, DeadLetter) for i in items) == counts["malformed"] > 0
    assert sum(isinstance(i, CustomerProfile) for i in items) == counts["profiles"]


def test_generate_rees46_writes_the_header_and_skips_what_rees46_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.csv"
    counts = generate(capsys, "--to", "file", "--format", "rees46", "--out", str(out))
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(REES46_COLUMNS)
    assert len(lines) - 1 == counts["written"]
    assert counts["written"] + counts["skipped"] == 400 + counts["profiles"]


def test_generate_avro_record_log_replays_through_the_codec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.avro"
    counts = generate(capsys, "--to", "file", "--format", "avro", "--out", str(out),
                      "--malformed-ratio", "0.1")
    assert len(list(read_records(out))) == counts["written"]
    items = list(read_record_log(out, CoreSettings()))
    assert sum(isinstance(i, BehaviourEvent) for i in items) == counts["events"]
    assert sum(isinstance(i, CustomerProfile) for i in items) == counts["profiles"]
    assert sum(isinstance(i, DeadLetter) for i in items) == counts["malformed"]


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--to", "file"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["generate", "--to", "file", "--out", str(tmp_path / "x"), "--customers", "0"]) == 2
    assert "customers >= 1" in capsys.readouterr().err


def test_instants() -> None:
    assert parse_instant("2026-01-05T08:00:00Z") == DEFAULT_START
    assert parse_instant("2026-01-05T09:00:00+01:00") == DEFAULT_START
    assert parse_instant(str(DEFAULT_START)) == DEFAULT_START
