"""The ground truth answers sends deterministically, and close_loop reaches a fixed point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipelines.reference import run_replay
from runners.cli import main
from runners.ground_truth import (
    Arm,
    GroundTruth,
    Responder,
    Send,
    close_loop,
    default_truth,
    load_truth,
    merge,
    read_sends,
    truth_from_json,
)
from runners.traffic import Malformed, Traffic, TrafficConfig, jsonl_line
from tests.builders import HOUR, MINUTE, T0, profile, view
from transforms.model import EMAIL_CLICK, EMAIL_OPEN, PURCHASE, event_time
from transforms.payload import message_id
from transforms.readers import read_events_jsonl
from transforms.settings import Settings

CART, BROWSE = "cart_abandonment", "browse_intensity"
SEND_AT = T0 + HOUR


def sends(n: int, trigger: str = CART, variant: str | None = "a") -> list[Send]:
    return [Send(f"m{i:06d}", f"c{i}", trigger, variant, T0, SEND_AT) for i in range(n)]


# ------------------------------------------------------------------ the truth itself


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ({"arms": {CART: {"a": {"open": 0.1, "click": 0.2, "purchase": 0.0}}}}, "click 0.2 > open"),
        ({"arms": {CART: {"a": {"open": 1.5, "click": 0.2, "purchase": 0}}}}, "not a probability"),
        ({"arms": {CART: {"a": {"open": math.nan, "click": 0, "purchase": 0}}}}, "not a probab"),
        ({"arms": {CART: {"a": {"open": True, "click": 0, "purchase": 0}}}}, "not a number"),
        ({"arms": {CART: {"a": {"open": 0.5, "click": 0.1}}}}, "exactly open, click, purchase"),
        ({"arms": {CART: {}}}, "must map variants"),
        ({"base_purchase": {CART: -0.1}}, "not a probability"),
        ({"delays": {"open": ["2h", "1h"]}}, "low <= high"),
        ({"delays": {"bounce": ["1m", "1h"]}}, "not one of"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"propensities": {}}, "unknown ground-truth keys"),
    ],
)
def test_a_bad_truth_is_refused_with_what_is_wrong(patch: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        truth_from_json(patch)


def test_the_truth_round_trips_through_its_json_and_toml(tmp_path: Path) -> None:
    truth = default_truth(seed=9)
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth.to_json()))
    assert load_truth(path) == truth
    toml = tmp_path / "truth.toml"
    toml.write_text('seed = 3\n[arms.cart_abandonment.x]\nopen = 0.5\nclick = 0.25\n'
                    'purchase = 0.125\n[delays]\nopen = ["1m", "2m"]\n')
    loaded = load_truth(toml)
    assert loaded.arm(CART, "x") == Arm(0.5, 0.25, 0.125)
    assert loaded.delays["open"] == (MINUTE, 2 * MINUTE) and loaded.seed == 3


def test_best_arm_is_the_highest_propensity_and_ties_go_to_the_first_name() -> None:
    truth = default_truth()
    assert truth.best(CART) == ("b", 0.08) and truth.best(BROWSE) == ("a", 0.06)
    tie = GroundTruth({CART: {"b": Arm(0.1, 0.05, 0), "a": Arm(0.1, 0.05, 0)}}, {})
    assert tie.best(CART) == ("a", 0.05)
    assert tie.best("unknown_trigger") == (None, tie.default_arm.click)


# ------------------------------------------------------------------ answers


def test_answers_are_the_same_whatever_else_was_sent() -> None:
    responder = Responder(default_truth())
    few, many = sends(50), sends(5000)
    alone = responder.answers(few)
    customers = {s.customer_id for s in few}
    among = [ev for ev in responder.answers(many) if ev.customer_id in customers]
    assert alone == among
    assert Responder(default_truth()).answers(few) == alone  # a new responder, same answers


def test_a_better_variant_never_loses_a_click_of_the_same_message() -> None:
    responder = Responder(default_truth())  # cart: a clicks 3 %, b 8 %
    a = [responder.outcomes(s)["click"] for s in sends(20_000, variant="a")]
    b = [responder.outcomes(s)["click"] for s in sends(20_000, variant="b")]
    assert all(y for x, y in zip(a, b, strict=True) if x)
    assert sum(b) > sum(a)


@pytest.mark.parametrize(("variant", "kind"), [("a", "open"), ("a", "click"), ("b", "purchase")])
def test_rates_match_the_propensities(variant: str, kind: str) -> None:
    n = 40_000
    truth = default_truth()
    responder = Responder(truth)
    got = sum(responder.outcomes(s)[kind] for s in sends(n, variant=variant))
    p = truth.arm(CART, variant).get(kind)
    assert abs(got - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_the_holdout_never_opens_and_buys_at_the_base_rate() -> None:
    n = 40_000
    truth = default_truth()
    responder = Responder(truth)
    outcomes = [responder.outcomes(s) for s in sends(n, variant=None)]
    assert not any(o["open"] or o["click"] for o in outcomes)
    bought = sum(o["purchase"] for o in outcomes)
    p = truth.base(CART)
    assert abs(bought - n * p) < 4 * math.sqrt(n * p * (1 - p))
    events = responder.answers(sends(n, variant=None))
    assert events and {ev.event_type for ev in events} == {PURCHASE}


def test_answers_follow_the_send_in_order_and_within_their_delays() -> None:
    truth = GroundTruth({CART: {"a": Arm(1.0, 1.0, 1.0)}}, {})
    deferred = Send("m-deferred", "c1", CART, "a", T0, T0 + 10 * HOUR)  # send_after: 10 h later
    events = Responder(truth).answer(deferred)
    assert [ev.event_type for ev in events] == [EMAIL_OPEN, EMAIL_CLICK, PURCHASE]
    opened, clicked, bought = (ev.occurred_at for ev in events)
    (ol, oh), (cl, ch), (pl, ph) = (truth.delays[k] for k in ("open", "click", "purchase"))
    assert deferred.at + ol <= opened <= deferred.at + oh
    assert opened + cl <= clicked <= opened + ch
    assert clicked + pl <= bought <= clicked + ph
    assert all(ev.email_message_id == "m-deferred" for ev in events[:2])
    assert all(ev.email_campaign == CART for ev in events[:2])  # no campaign: the trigger's
    p = events[2]
    assert p.product is not None and p.order_total == p.product.price and p.quantity == 1
    assert len({ev.event_id for ev in events}) == 3


def test_a_truth_that_nobody_answers_gives_no_events() -> None:
    truth = GroundTruth({CART: {"a": Arm(0.0, 0.0, 0.0)}}, {CART: 0.0})
    assert Responder(truth).answers(sends(500) + sends(500, variant=None)) == []


# ------------------------------------------------------------------ merge


def test_merge_puts_no_answer_after_a_later_item_even_in_shuffled_traffic() -> None:
    base = list(Traffic(TrafficConfig(events=600, customers=40, rate=0.5, seed=3,
                                      out_of_order_ms=20 * MINUTE)))
    times = [i.event.occurred_at if isinstance(i, Malformed) else event_time(i) for i in base]
    assert times != sorted(times)  # the hostile case: arrival order is not time order
    first, last = min(times), max(times)
    answers = Responder(GroundTruth({CART: {"a": Arm(1, 1, 1)}}, {})).answers(
        [Send(f"m{i}", "c", CART, "a", t, t) for i, t in
         enumerate(range(first - HOUR, last + HOUR, 7 * MINUTE))]
    )
    merged = list(merge(base, answers))
    assert len(merged) == len(base) + len(answers)
    assert [m for m in merged if m not in answers] == base
    seen = -1
    for m in merged:
        t = m.event.occurred_at if isinstance(m, Malformed) else event_time(m)
        if m in answers:
            assert seen <= t  # nothing read before an answer is later than it
        seen = max(seen, t)
    assert merged[-1] is answers[-1]  # answers after the traffic come at its end


# ------------------------------------------------------------------ sends of a replay dir


def test_read_sends_takes_send_after_and_derives_the_holdout_message_id(tmp_path: Path) -> None:
    payload = {"message_id": "m1", "customer_id": "c1", "variant": "b", "send_after": T0 + HOUR,
               "trigger": {"type": CART, "key": "k1", "fired_at": T0}, "campaign": f"{CART}.v1"}
    audits = [
        {"customer_id": "c2", "type": BROWSE, "key": "k2", "fired_at": T0 + 1,
         "decision": "suppressed:holdout", "message_id": None},
        {"customer_id": "c3", "type": BROWSE, "key": "k3", "fired_at": T0 + 2,
         "decision": "suppressed:cap", "message_id": None},
    ]
    (tmp_path / "payloads.jsonl").write_text(json.dumps(payload) + "\n")
    (tmp_path / "audit.jsonl").write_text("".join(json.dumps(a) + "\n" for a in audits))
    got = read_sends(tmp_path)
    held = Send(message_id("c2", BROWSE, "k2", T0 + 1), "c2", BROWSE, None, T0 + 1, T0 + 1)
    assert got == sorted([Send("m1", "c1", CART, "b", T0, T0 + HOUR, f"{CART}.v1"), held])
    assert held.holdout and not got[[s.message_id for s in got].index("m1")].holdout


# ------------------------------------------------------------------ the closed loop


def test_close_loop_reaches_a_fixed_point_that_a_plain_replay_confirms(tmp_path: Path) -> None:
    base = list(Traffic(TrafficConfig(events=2500, customers=150, rate=0.3, seed=5)))
    settings = Settings()
    truth = GroundTruth({CART: {"a": Arm(0.9, 0.6, 0.5), "b": Arm(0.9, 0.6, 0.5)},
                         BROWSE: {"a": Arm(0.9, 0.6, 0.5), "b": Arm(0.9, 0.6, 0.5)}}, {})
    rounds: list[tuple[int, int]] = []
    loop = close_loop(base, truth, settings, tmp_path / "loop",
                      on_round=lambda n, s: rounds.append((n, s)))
    assert loop.converged and loop.rounds == len(rounds) >= 2
    assert loop.sends and loop.answers
    opens = [ev for ev in loop.answers if ev.event_type == EMAIL_OPEN]
    assert opens and all(ev.email_campaign.endswith(".v1") for ev in opens)  # the payload's
    counts = loop.counts()
    assert counts["sends"] + counts["held_out"] == len(loop.sends) and counts["purchases"] > 0
    # Independently: the traffic with its answers, replayed once, sends exactly the same.
    path = tmp_path / "traffic.jsonl"
    path.write_text("".join(jsonl_line(i) + "\n" for i in loop.items(base)))
    run_replay(read_events_jsonl(path, False, settings.core), settings, tmp_path / "again")
    again = read_sends(tmp_path / "again")
    assert again == loop.sends
    assert Responder(truth).answers(again) == loop.answers


def test_close_loop_refuses_answers_outside_the_attribution_window(tmp_path: Path) -> None:
    late = GroundTruth({}, {}, delays={"open": (1, 30 * HOUR), "click": (1, 30 * HOUR),
                                       "purchase": (1, 12 * HOUR)})
    base = [profile(T0), view(T0 + MINUTE)]
    with pytest.raises(ValueError, match="attribution window"):
        close_loop(base, late, Settings(), tmp_path)
    # 50 h of delays fit 72 h, but not with a 10 h quiet-hours deferral before the send.
    tight = GroundTruth({}, {}, delays={"open": (1, 20 * HOUR), "click": (1, 20 * HOUR),
                                        "purchase": (1, 23 * HOUR)})
    with pytest.raises(ValueError, match="quiet hours included"):
        close_loop(base, tight, Settings(), tmp_path)
    no_quiet = Settings().with_overrides(["core.quiet_start_hour=0", "core.quiet_end_hour=0"])
    assert close_loop(base, tight, no_quiet, tmp_path).converged
    with pytest.raises(ValueError, match="at least 2"):
        close_loop(base, default_truth(), Settings(), tmp_path, max_rounds=1)


# ------------------------------------------------------------------ the CLI


def test_generate_responses_writes_the_answers_and_the_truth_beside_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    always = {"open": 1, "click": 1, "purchase": 1}
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"arms": {t: {"a": always, "b": always} for t in (CART, BROWSE)},
                                 "default_base_purchase": 0, "base_purchase": {}}))
    out = tmp_path / "gt.jsonl"
    argv = ["generate", "--events", "1500", "--customers", "100", "--rate", "0.3", "--seed", "2",
            "--to", "file", "--out", str(out), "--responses", "--truth", str(truth)]
    # Only the two triggers the truth answers (an answer to every email, purchases included,
    # would make the purchase-led triggers fire on and on).
    off = [f"core.{name}_enabled=false" for name in ("post_purchase", "win_back", "welcome",
                                                       "followup")]
    argv += [f"--set={o}" for o in off]
    assert main(argv) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["loop_converged"] and counts["loop_rounds"] >= 2
    assert counts["sends"] == counts["opens"] == counts["clicks"] == counts["purchases"] > 0
    items = list(read_events_jsonl(out))
    # Replayed, the file sends exactly the emails it answers: one open and one click each.
    sent = {s.message_id for s in read_sends_of(items, tmp_path, off) if not s.holdout}
    for kind in (EMAIL_OPEN, EMAIL_CLICK):
        answered = [i.email_message_id for i in items if getattr(i, "event_type", "") == kind
                    and i.event_id.isalnum() and i.email_message_id in sent]
        assert sorted(answered) == sorted(sent)
    written = json.loads(Path(f"{out}.truth.json").read_text())
    assert written["arms"][CART]["a"] == {"open": 1.0, "click": 1.0, "purchase": 1.0}
    assert written["loop"]["sends"] == counts["sends"]


def read_sends_of(items: list, tmp_path: Path, overrides: list[str] | None = None) -> list[Send]:
    run_replay(iter(items), Settings().with_overrides(overrides or []), tmp_path / "replayed")
    return read_sends(tmp_path / "replayed")


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--format", "rees46"], "cannot hold email events"),
        (["--truth", "missing.json"], "--truth missing.json"),
        (["--loop-rounds", "1"], "at least 2"),
        (["--to", "kafka"], "needs --to file"),
    ],
)
def test_generate_responses_refuses_what_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], error: str
) -> None:
    argv = ["generate", "--events", "50", "--customers", "10", "--rate", "1", "--to", "file",
            "--out", str(tmp_path / "x"), "--responses", *extra]
    assert main(argv) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_generate_refuses_a_truth_without_responses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "--events", "50", "--to", "file", "--out", str(tmp_path / "x"),
            "--truth", str(tmp_path / "t.json")]
    assert main(argv) == 2
    assert "--truth needs --responses" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
