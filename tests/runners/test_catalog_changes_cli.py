"""Catalog changes in the CLI: `personalize generate --catalog-changes N` into replay files
(JSONL and the Avro record log, read back as the replay reads them), and the file reader of
`personalize catalog changes` (bad lines rejected with their reason, never produced)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.catalog import read_changes
from runners.cli import main
from runners.replay import read_record_log
from transforms.catalog_changes import CatalogChange, change_to_json
from transforms.model import R_INVALID, R_MISSING, BehaviourEvent, DeadLetter
from transforms.readers import read_events_jsonl
from transforms.settings import CoreSettings, Settings


def generate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, int]:
    argv = ["generate", "--events", "400", "--customers", "50", "--rate", "2", "--seed", "4",
            "--catalog-changes", "5", "--catalog-hostile-ratio", "0.2"]
    assert main([*argv, *args]) == 0
    counts: dict[str, int] = json.loads(capsys.readouterr().out)
    return counts


@pytest.mark.parametrize("fmt", ["jsonl", "avro"])
def test_generate_writes_catalog_changes_into_replay_files(tmp_path, capsys, fmt):
    out = tmp_path / f"items.{fmt}"
    counts = generate(capsys, "--to", "file", "--format", fmt, "--out", str(out))
    items = list(read_events_jsonl(out) if fmt == "jsonl" else read_record_log(out, CoreSettings()))
    changes = [i for i in items if isinstance(i, CatalogChange)]
    hostile = [i for i in items if isinstance(i, DeadLetter) and i.reason == R_INVALID]
    assert counts["catalog_changes"] == len(changes) + counts["catalog_hostile"] > 20
    assert len(hostile) == counts["catalog_hostile"] > 0
    assert any(c.in_stock is False for c in changes) and any(c.in_stock is True for c in changes)
    # Each change comes after the product event that chose it, never before the newest time.
    newest = None
    for item in items:
        if isinstance(item, BehaviourEvent):
            newest = max(newest or item.occurred_at, item.occurred_at)
        elif isinstance(item, CatalogChange):
            assert item.occurred_at == newest


def test_rees46_cannot_hold_catalog_changes(tmp_path, capsys):
    out = tmp_path / "items.csv"
    counts = generate(capsys, "--to", "file", "--format", "rees46", "--out", str(out))
    assert counts["skipped"] >= counts["catalog_changes"] > 0


def test_the_changes_file_reader_rejects_bad_lines(tmp_path: Path) -> None:
    good = change_to_json(CatalogChange("c1", "p1", 1_767_600_000_000, 9.99, True))
    lines = [
        json.dumps(good),
        json.dumps({**good, "change_id": "c2", "price": -1}),
        json.dumps({k: v for k, v in good.items() if k != "product_id"}),
        "{not json",
        json.dumps({"kind": "event", "event_id": "e", "customer_id": "c", "event_type":
                    "page_view", "occurred_at": 1}),
    ]
    path = tmp_path / "changes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    got = list(read_changes(path, Settings()))
    assert isinstance(got[0], CatalogChange) and got[0].price == 9.99
    assert [(d.reason, d.origin.offset) for d in got[1:]] == [
        (R_INVALID, 2), (R_MISSING, 3), ("decode_error", 4), (R_INVALID, 5)]
