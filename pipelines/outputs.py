"""Output files of offline runs (replays), the same for every runner:

    DIR/payloads.jsonl      one EmailPayload per line (timestamps epoch ms or null)
    DIR/audit.jsonl         one policy decision per fired trigger, consent change, erasure
    DIR/dead_letters.jsonl  one DeadLetter per line (raw bytes base64)
    DIR/features.jsonl      feature-store snapshots (what would go to Redis)
    DIR/outcomes.jsonl      one attributed Outcome per line (transforms/attribution.py)
    DIR/summary.json        counts (erasures and consent writes of the feature store too)
    DIR/timeline.json       (wall seconds, inputs, payloads) samples: throughput over time

Lines are written sorted (payloads by message_id, audit by customer/time/type/key, outcomes
by message/time/event) so that
runs of different engines compare byte for byte.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from transforms.catalog_changes import CatalogChange
from transforms.jsonl import to_json
from transforms.model import (
    AUDIT,
    CONSENT,
    DEAD_LETTER,
    DROPPED,
    ERASE,
    FEATURES,
    OUTCOME,
    PAYLOAD,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    Output,
)


def _audit_order(rec: dict[str, Any]) -> tuple[Any, ...]:
    return (rec["customer_id"], rec["fired_at"], rec["type"], rec["key"])


class OutputFiles:
    """Collects outputs by kind, writes them sorted on close, and counts everything."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir)
        self.rows: dict[str, list[dict[str, Any]]] = {
            PAYLOAD: [],
            AUDIT: [],
            DEAD_LETTER: [],
            FEATURES: [],
            OUTCOME: [],
        }
        self.summary: dict[str, Any] = {
            "input_events": 0,
            "input_profiles": 0,
            "input_dead_letters": 0,
            "payloads": 0,
            "dropped": {},
            "decisions": {},
            "dead_letters": {},
            "erasures": 0,
            "consent_writes": 0,
            "outcomes": {},
        }
        self.started = time.perf_counter()
        self.inputs = 0
        self.timeline: list[tuple[float, int, int]] = [(0.0, 0, 0)]

    def count_input(
        self, item: BehaviourEvent | CustomerProfile | CatalogChange | DeadLetter
    ) -> None:
        """Count one input item by kind (and sample throughput every 1000 items)."""
        self.inputs += 1
        if self.inputs % 1000 == 0:
            self.sample()
        if isinstance(item, BehaviourEvent):
            self.summary["input_events"] += 1
        elif isinstance(item, CustomerProfile):
            self.summary["input_profiles"] += 1
        elif isinstance(item, CatalogChange):
            s = self.summary
            s["input_catalog_changes"] = s.get("input_catalog_changes", 0) + 1
        else:
            self.summary["input_dead_letters"] += 1

    def sample(self) -> None:
        """Record (wall seconds since start, inputs so far, payloads so far)."""
        elapsed = round(time.perf_counter() - self.started, 4)
        self.timeline.append((elapsed, self.inputs, self.summary["payloads"]))

    def write(self, output: Output) -> None:
        """One (kind, record) output of the core or of the decoder."""
        kind, record = output
        s = self.summary
        if kind == DROPPED:
            s["dropped"][record] = s["dropped"].get(record, 0) + 1
            return
        if kind == ERASE:
            s["erasures"] += 1
            return
        if kind == CONSENT:
            s["consent_writes"] += 1
            return
        row = to_json(record)
        self.rows[kind].append(row)
        if kind == PAYLOAD:
            s["payloads"] += 1
        elif kind == AUDIT:
            key = f"{row['type']}:{row['decision']}"
            s["decisions"][key] = s["decisions"].get(key, 0) + 1
        elif kind == DEAD_LETTER:
            s["dead_letters"][row["reason"]] = s["dead_letters"].get(row["reason"], 0) + 1
        elif kind == OUTCOME:
            s["outcomes"][row["kind"]] = s["outcomes"].get(row["kind"], 0) + 1

    def close(self) -> None:
        """Write every file, sorted, and the summary."""
        self.dir.mkdir(parents=True, exist_ok=True)
        orders = {
            PAYLOAD: lambda r: r["message_id"],
            AUDIT: _audit_order,
            DEAD_LETTER: lambda r: (
                r["origin"]["topic"],
                r["origin"]["partition"],
                r["origin"]["offset"],
                r["reason"],
            ),
            FEATURES: lambda r: (r["customer_id"], r["as_of"]),
            OUTCOME: lambda r: (r["message_id"], r["occurred_at"], r["event_id"]),
        }
        names = {
            PAYLOAD: "payloads",
            AUDIT: "audit",
            DEAD_LETTER: "dead_letters",
            FEATURES: "features",
            OUTCOME: "outcomes",
        }
        for kind, rows in self.rows.items():
            rows.sort(key=orders[kind])
            with (self.dir / f"{names[kind]}.jsonl").open("w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n")
        self.sample()
        (self.dir / "summary.json").write_text(
            json.dumps(self.summary, indent=2, sort_keys=True) + "\n"
        )
        (self.dir / "timeline.json").write_text(json.dumps(self.timeline) + "\n")

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
