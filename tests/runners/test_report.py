"""The run report counts trigger decisions and consent changes apart."""

from __future__ import annotations

import json
from pathlib import Path

from runners.report import write_report


def test_consent_changes_are_counted_apart_from_trigger_decisions(tmp_path: Path) -> None:
    audit = [
        {"customer_id": "c1", "type": "cart_abandonment", "key": "k", "fired_at": 1,
         "decision": "suppressed:no_consent", "message_id": None},
        {"customer_id": "c1", "type": "consent_change", "key": "e1", "fired_at": 0,
         "decision": "consent:revoked", "message_id": None},
        {"customer_id": "c2", "type": "consent_change", "key": "e2", "fired_at": 0,
         "decision": "consent:revoked", "message_id": None},
    ]
    (tmp_path / "summary.json").write_text(json.dumps({"payloads": 0}))
    (tmp_path / "audit.jsonl").write_text("".join(json.dumps(a) + "\n" for a in audit))
    page = write_report(tmp_path).read_text()
    triggers = page.split("<h2>Decisions per trigger</h2>")[1].split("<h2>")[0]
    assert "cart_abandonment" in triggers and "consent" not in triggers.replace("no_consent", "")
    consents = page.split("<h2>Consent changes</h2>")[1].split("<h2>")[0]
    assert "<td>consent:revoked</td><td>2</td>" in consents
