"""Parity of the triggers of DESIGN.md section 10: each fires on the reference runner, Beam and
Flink, with byte-identical payloads, audit, dead letters and feature snapshots.

`trigger_journeys()`, one customer per case, in arrival order (a background customer's views
move the watermark on while the input flows; the end of input fires the long deadlines):

    {p}-buyer     buys two products: post-purchase at +3 d, win-back at +30 d after its last
                  activity
    {p}-rebuy     buys, buys again a day later: one post-purchase, from the second purchase
    {p}-back      buys, comes back after 10 d (a view): win-back 30 d after the view
    {p}-signup    signs up without consent, grants it a minute later: welcome at sign-up +10 min
    {p}-clicker   clicks an email and never visits: engagement follow-up at click + 2 h
    {p}-visitor   clicks an email, then views a product within the window: no follow-up
    {p}-both      a click at T0 and a purchase 3 d - 2 h before: follow-up and post-purchase at
                  the same instant: post-purchase goes on, the follow-up is suppressed (priority)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import beam_pipeline, flink_pipeline, reference
from tests.builders import HOUR, MINUTE, T0, consent, event, profile, purchase, view
from transforms.model import EMAIL_CLICK, PAGE_VIEW, Item, event_time
from transforms.settings import DAY, Settings

pytestmark = pytest.mark.engine

FILES = ("payloads.jsonl", "audit.jsonl", "dead_letters.jsonl", "features.jsonl")


def trigger_journeys(p: str = "t") -> list[Item]:
    """See the module docstring."""
    c = {n: f"{p}-{n}" for n in ("buyer", "rebuy", "back", "signup", "clicker", "visitor", "both",
                                 "bg")}
    items: list[Item] = [profile(T0 - 4 * DAY, cid=cid, email=f"{cid}@example.com")
                         for n, cid in c.items() if n != "signup"]
    items.append(profile(T0 - HOUR, cid=c["signup"], consent=False,
                         email=f"{c['signup']}@example.com"))
    items += [purchase(T0, "p1", cid=c["buyer"]), purchase(T0 + 1, "p2", cid=c["buyer"])]
    items += [purchase(T0, "p3", cid=c["rebuy"]), purchase(T0 + DAY, "p4", cid=c["rebuy"])]
    items += [purchase(T0, "p5", cid=c["back"]), view(T0 + 10 * DAY, "p6", cid=c["back"])]
    items += [event(PAGE_VIEW, T0, cid=c["signup"], properties={"action": "sign_up"}),
              consent(T0 + MINUTE, True, cid=c["signup"])]
    items += [event(EMAIL_CLICK, T0, cid=c["clicker"], email_message_id="m1")]
    items += [event(EMAIL_CLICK, T0, cid=c["visitor"], email_message_id="m2"),
              view(T0 + HOUR, "p7", cid=c["visitor"])]
    items += [purchase(T0 + 2 * HOUR - 3 * DAY, "p8", cid=c["both"]),
              event(EMAIL_CLICK, T0, cid=c["both"], email_message_id="m3")]
    items += [view(T0 + k * 10 * MINUTE, f"b{k}", "bg", cid=c["bg"]) for k in range(-3, 30)]
    items.sort(key=event_time)
    return items


EXPECTED = {
    "post_purchase:emitted": 4,        # buyer, rebuy, back, both
    "win_back:emitted": 4,             # buyer, rebuy, back, both (each once)
    "welcome:emitted": 1,              # signup
    "engagement_followup:emitted": 1,  # clicker
    "engagement_followup:suppressed:priority": 1,  # both
}


def _same(a: Path, b: Path) -> None:
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs"


def test_each_new_trigger_fires_on_the_reference_beam_and_flink_identically(tmp_path):
    settings = Settings()
    items = trigger_journeys()
    ref = reference.run_replay(items, settings, tmp_path / "ref")
    decisions = ref["decisions"]
    assert {k: decisions.get(k) for k in EXPECTED} == EXPECTED
    beam = beam_pipeline.run_replay(items, settings, tmp_path / "beam")
    assert beam == ref
    _same(tmp_path / "beam", tmp_path / "ref")
    flink = flink_pipeline.run_replay(items, settings, tmp_path / "flink")
    assert flink == ref
    _same(tmp_path / "flink", tmp_path / "ref")
