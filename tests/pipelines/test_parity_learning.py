"""Parity of the learning loop (DESIGN.md section 9): attributed outcomes, the holdout group and
the variants of the payloads are byte-identical on the reference runner, Beam and Flink.

The input is built in two passes: carts abandoned by customers (two of them in the holdout
group) are run on the reference runner once to learn the message ids it produces, then opens,
clicks and purchases naming those ids (and hostile ones: a foreign id, an open before the
send) are added, and the whole input runs on all three runners.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import beam_pipeline, flink_pipeline, reference
from tests.builders import HOUR, MINUTE, SECOND, T0, add, event, profile, purchase, view
from transforms.attribution import in_holdout
from transforms.bandit import draw
from transforms.model import EMAIL_CLICK, EMAIL_OPEN, Item, event_time
from transforms.settings import Settings

pytestmark = pytest.mark.engine

COMPARED = ("payloads", "audit", "dead_letters", "features", "outcomes")
CUSTOMERS = 24


def _ids(settings: Settings, prefix: str, n: int, held: bool) -> list[str]:
    """The first n ids prefix<i> in (held True) or out of the holdout group."""
    core = settings.core
    return [c for c in (f"{prefix}{i}" for i in range(2000))
            if in_holdout(c, core.holdout_share, core.holdout_salt) == held][:n]


def carts(settings: Settings) -> list[Item]:
    """Carts abandoned at T0 + i s by CUSTOMERS customers and two held-out ones, and background
    views every 5 min until T0 + 6 h so the watermark moves through every deadline."""
    people = _ids(settings, "L-cart", CUSTOMERS, False) + _ids(settings, "L-hold", 2, True)
    items: list[Item] = [profile(T0 - HOUR, cid=c, email=f"{c}@example.com") for c in people]
    items += [add(T0 + i * SECOND, f"p{i}", cid=c) for i, c in enumerate(people)]
    items += [view(T0 + k * 5 * MINUTE, f"b{k}", "bg", cid=f"L-bg{k % 7}") for k in range(72)]
    return items


def responses(audit: list[dict]) -> list[Item]:
    """Opens, clicks and purchases of the messages in `audit`, and hostile ones."""
    sent = [a for a in audit if a["message_id"]]
    items: list[Item] = []
    for i, a in enumerate(sent):
        cid, mid, t = a["customer_id"], a["message_id"], a["fired_at"]
        if a["decision"] == "suppressed:holdout":
            items.append(purchase(t + HOUR, "h1", price=25.0, cid=cid))
        elif i % 3 == 0:
            items.append(event(EMAIL_OPEN, t + 10 * MINUTE, cid=cid, email_message_id=mid))
        elif i % 3 == 1:
            items += [event(EMAIL_OPEN, t + 15 * MINUTE, cid=cid, email_message_id=mid),
                      event(EMAIL_CLICK, t + 20 * MINUTE, cid=cid, email_message_id=mid),
                      purchase(t + 2 * HOUR, "q1", price=19.5, cid=cid)]
        else:
            items += [purchase(t + 30 * MINUTE, "q2", price=7.25, cid=cid),
                      event(EMAIL_OPEN, t + 40 * MINUTE, cid=cid, email_message_id="foreign-id"),
                      event(EMAIL_OPEN, t - 20 * MINUTE, cid=cid, email_message_id=mid)]
    return items


def learning_input(settings: Settings, tmp_path: Path) -> list[Item]:
    first = carts(settings)
    reference.run_replay(sorted(first, key=event_time), settings, tmp_path / "first")
    audit = [json.loads(line) for line in (tmp_path / "first" / "audit.jsonl").open()]
    return sorted(first + responses(audit), key=event_time)


def _files(out: Path) -> dict[str, str]:
    return {name: (out / f"{name}.jsonl").read_text() for name in COMPARED}


def test_outcomes_holdout_and_variants_are_the_same_on_every_runner(tmp_path: Path) -> None:
    settings = Settings()
    items = learning_input(settings, tmp_path)
    want = reference.run_replay(items, settings, tmp_path / "ref")
    decisions = want["decisions"]
    assert want["dropped"] == {}                  # no arms_late: nothing behind its watermark
    assert decisions["cart_abandonment:suppressed:holdout"] == 2
    assert decisions["cart_abandonment:emitted"] == CUSTOMERS
    outcomes = [json.loads(line) for line in (tmp_path / "ref" / "outcomes.jsonl").open()]
    kinds = {(o["kind"], o["holdout"]) for o in outcomes}
    assert kinds == {("open", False), ("click", False), ("purchase", False), ("purchase", True)}
    assert all(o["message_id"] != "foreign-id" for o in outcomes)
    assert all(o["occurred_at"] >= o["fired_at"] for o in outcomes)
    # opens: 8 + 8 (the ones before the send and the foreign ids are not attributed)
    assert want["outcomes"] == {"open": 16, "click": 8, "purchase": 18}
    payloads = [json.loads(line) for line in (tmp_path / "ref" / "payloads.jsonl").open()]
    by_id = {p["message_id"]: p["variant"] for p in payloads}
    for o in outcomes:
        assert o["variant"] == (None if o["holdout"] else by_id[o["message_id"]])
    beam = beam_pipeline.run_replay(items, settings, tmp_path / "beam")
    assert _files(tmp_path / "beam") == _files(tmp_path / "ref")
    assert beam == want
    flink = flink_pipeline.run_replay(items, settings, tmp_path / "flink")
    assert _files(tmp_path / "flink") == _files(tmp_path / "ref")
    assert flink == want


def test_the_bandit_learns_over_epochs_and_chooses_alike_on_every_runner(tmp_path: Path) -> None:
    """Carts abandoned every 5 min for 6 h; about half the messages are clicked 5 min after
    their send, so every epoch after the first chooses from counts the ones before it left."""
    settings = Settings()
    people = _ids(settings, "B-cart", 72, False)
    first: list[Item] = [profile(T0 - HOUR, cid=c, email=f"{c}@example.com") for c in people]
    first += [add(T0 + i * 5 * MINUTE, f"p{i}", cid=c) for i, c in enumerate(people)]
    first += [view(T0 + k * 5 * MINUTE, f"b{k}", "bg", cid=f"B-bg{k % 7}") for k in range(100)]
    reference.run_replay(sorted(first, key=event_time), settings, tmp_path / "first")
    audit = [json.loads(line) for line in (tmp_path / "first" / "audit.jsonl").open()]
    clicks = [event(EMAIL_CLICK, a["fired_at"] + 5 * MINUTE, cid=a["customer_id"],
                    email_message_id=a["message_id"])
              for a in audit if a["message_id"] and int(a["message_id"], 16) % 2 == 0]
    items = sorted(first + clicks, key=event_time)
    want = reference.run_replay(items, settings, tmp_path / "ref")
    assert want["dropped"] == {} and want["outcomes"] == {"click": len(clicks)}
    assert len(clicks) > 20
    outcomes = [json.loads(line) for line in (tmp_path / "ref" / "outcomes.jsonl").open()]
    assert {o["variant"] for o in outcomes} == {"a", "b"}
    # The counts were used: some choices differ from what the flat prior alone would draw.
    payloads = [json.loads(line) for line in (tmp_path / "ref" / "payloads.jsonl").open()]
    flat = [p for p in payloads if p["variant"] == draw(p["message_id"], ("a", "b"), {})]
    assert 0 < len(flat) < len(payloads)
    beam = beam_pipeline.run_replay(items, settings, tmp_path / "beam")
    assert _files(tmp_path / "beam") == _files(tmp_path / "ref")
    assert beam == want
    flink = flink_pipeline.run_replay(items, settings, tmp_path / "flink")
    assert _files(tmp_path / "flink") == _files(tmp_path / "ref")
    assert flink == want
