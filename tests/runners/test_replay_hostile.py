"""`personalize replay` of a hostile events-JSONL file: bad lines become dead letters, the replay
goes on and writes everything else, on the reference runner and to Kafka."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.cli import main
from runners.kafka_io import consume, topic_sizes
from tests.builders import CART_DELAY, T0, add, profile
from transforms.codec import decode_dead_letter
from transforms.jsonl import dumps, item_to_json
from transforms.model import R_DECODE, R_INVALID


def hostile_file(tmp_path: Path) -> Path:
    """A profile, a 2 000-item cart of one customer, and three bad lines among them."""
    lines = [dumps(item_to_json(profile(T0 - 1, name="Ada\r\n" + "n" * 2000)))]
    lines += [dumps(item_to_json(add(T0 + i, pid=f"p{i:05d}"))) for i in range(2000)]
    lines.insert(2, "[" * 2000 + "]" * 2000)
    lines.insert(3, dumps({**item_to_json(add(T0 + 5)), "quantity": 2147483648}))
    lines.insert(4, json.dumps({**item_to_json(add(T0 + 6)), "order_id": "o",
                                "order_total": 10**400}))
    lines.append(dumps(item_to_json(add(T0 + 2000 + 2 * CART_DELAY, cid="c2"))))
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_hostile_jsonl_replays_on_the_reference_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = hostile_file(tmp_path)
    code = main(["replay", "--input", str(path), "--format", "events-jsonl",
                 "--runner", "reference", "--out", str(tmp_path / "out")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_dead_letters"] == 3 and summary["payloads"] == 1
    dead = [json.loads(line) for line in (tmp_path / "out" / "dead_letters.jsonl").open()]
    assert sorted(d["reason"] for d in dead) == [R_DECODE, R_INVALID, R_INVALID]
    (payload,) = [json.loads(line) for line in (tmp_path / "out" / "payloads.jsonl").open()]
    assert len(payload["trigger"]["evidence"]) == 50
    assert "\n" not in payload["recipient"]["name"] and len(payload["recipient"]["name"]) <= 64


@pytest.mark.integration
def test_a_hostile_jsonl_replays_to_kafka(kafka: str, new_topic, tmp_path: Path) -> None:
    names = {n: new_topic(f"rh-{n}") for n in ("events", "profiles", "dead_letters")}
    sets = [f"kafka.bootstrap={kafka}", *(f"kafka.{n}_topic={t}" for n, t in names.items())]
    code = main(["replay", *(a for s in sets for a in ("--set", s)), "--input",
                 str(hostile_file(tmp_path)), "--format", "events-jsonl", "--to", "kafka"])
    assert code == 0
    assert topic_sizes(kafka, names.values()) == {
        names["events"]: 2001, names["profiles"]: 1, names["dead_letters"]: 3}
    dead = [decode_dead_letter(r.value) for r in consume(kafka, names["dead_letters"], 3)]
    assert sorted(d.reason for d in dead) == [R_DECODE, R_INVALID, R_INVALID]
