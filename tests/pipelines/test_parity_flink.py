"""Parity: the same input gives byte-identical payloads.jsonl and audit.jsonl (and dead letters)
on the reference runner and on the PyFlink topology (local mini-cluster, thread mode).

`journeys()` is also the input of the Kafka tests (tests/integration/test_flink_*.py).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from pipelines import flink_pipeline, reference
from runners import SHIPPED_DATA as DATA
from tests.builders import (
    CART_DELAY,
    HOUR,
    MINUTE,
    SECOND,
    T0,
    add,
    consent,
    erasure,
    event,
    profile,
    purchase,
    view,
)
from transforms.model import PRODUCT_VIEW, DeadLetter, Item, Origin, event_time
from transforms.readers import read_rees46
from transforms.settings import CoreSettings, Settings

pytestmark = pytest.mark.engine

COMPARED = ("payloads", "audit", "dead_letters", "features")
# What journeys() emits: the buyer's purchase fires post-purchase (3 d on) and win-back (30 d on)
# when a bounded input ends and every deadline fires.
JOURNEY_TRIGGERS = {"cart_abandonment", "browse_intensity", "post_purchase", "win_back"}


def journeys(prefix: str = "j") -> list[Item | DeadLetter]:
    """A small input, in arrival order, that fires both triggers and exercises the policy:

    - {prefix}-cart     adds to cart at T0 and leaves: cart abandonment at T0 + CART_DELAY
    - {prefix}-browse   five shoe views in four minutes: browse intensity at the fifth view
    - {prefix}-buyer    adds then purchases: no cart abandonment; post-purchase 3 d and
                        win-back 30 d later (when the input ends, every deadline fires)
    - {prefix}-mute     no email consent: its abandoned cart is suppressed (audit: no_consent)
    - {prefix}-dup      the same event twice (dropped as duplicate) and one event that
                        arrives after the watermark passed it (dead letter: late)
    - {prefix}-bg       background views every 10 min for 2 h, so the watermark passes the
                        cart deadline while the input is still flowing
    """
    cart, browse, buyer, mute, dup, bg = (f"{prefix}-{n}" for n in
                                          ("cart", "browse", "buyer", "mute", "dup", "bg"))
    items: list[Item | DeadLetter] = [
        profile(T0 - HOUR, cid=c, email=f"{c}@example.com") for c in (cart, browse, buyer, dup, bg)
    ]
    items.append(profile(T0 - HOUR, cid=mute, consent=False, email=f"{mute}@example.com"))
    items += [
        add(T0, "p1", cid=cart),
        add(T0 + SECOND, "p9", cid=mute),
        add(T0 + 2 * SECOND, "p2", cid=buyer),
        purchase(T0 + 3 * MINUTE, "p2", cid=buyer),
    ]
    items += [view(T0 + i * MINUTE, f"s{i}", "shoes", cid=browse) for i in range(5)]
    twice = event(PRODUCT_VIEW, T0 + 5 * MINUTE, cid=dup, eid=f"{prefix}-dup-1",
                  product=view(0).product)
    items += [twice, twice]
    items += [view(T0 + k * 10 * MINUTE, f"b{k}", "bg", cid=bg) for k in range(1, 13)]
    items.sort(key=event_time)                               # in time order, but for:
    late = view(T0 + 2 * MINUTE, "x1", "hats", cid=dup)      # the watermark is ~T0 + 2 h by now
    items.append(late)
    items.append(DeadLetter(raw=b"\x01garbage", origin=Origin("file", -1, 1), reason="decode_error",
                            error="test", received_at=0))
    assert T0 + CART_DELAY < T0 + 12 * 10 * MINUTE
    return items


def consent_journeys(prefix: str = "k") -> list[Item | DeadLetter]:
    """Consent and erasure never late, newest consent statement wins (DESIGN.md section 8):

    - {prefix}-quit     carts at T0; its unsubscribe (T0 + 1 min) arrives 39 min late, before
                        the cart deadline: applied, the cart abandonment is suppressed
    - {prefix}-held     carts at T0; its unsubscribe (T0 + 2 min) arrives after the deadline
                        fired: applied (deliver drops the payload), audited, not dead-lettered
    - {prefix}-gone     carts at T0; its erasure (T0 + 1 min) arrives 39 min late: applied
    - {prefix}-crm      unsubscribes at T0 - 30 min; a newer CRM snapshot without a consent
                        time still says granted: no re-grant, its cart is suppressed
    - {prefix}-bg<n>    background views (the watermark moves on, never by more than
                        max_future at once): every 6 s until T0 + 40 min, more than a Beam
                        replay batch, so the late items come in a later batch than the
                        profiles (Beam reads profiles and events as two streams), then every
                        4 min until T0 + 3 h
    """
    quit_, held, gone, crm = (f"{prefix}-{n}" for n in ("quit", "held", "gone", "crm"))
    items: list[Item | DeadLetter] = [
        profile(T0 - HOUR, cid=c, email=f"{c}@example.com") for c in (quit_, held, gone, crm)
    ]
    items += [consent(T0 - 30 * MINUTE, False, cid=crm),
              profile(T0 - 10 * MINUTE, cid=crm, email=f"{crm}@example.com")]
    items += [add(T0, "p1", cid=c) for c in (quit_, held, gone, crm)]
    times = [T0 - HOUR + k * 6 * SECOND for k in range(1, 1001)]
    times += [T0 + 40 * MINUTE + k * 4 * MINUTE for k in range(1, 36)]
    items += [view(t, f"b{k}", f"c{k}", cid=f"{prefix}-bg{k % 50}") for k, t in enumerate(times)]
    items.sort(key=event_time)
    at = next(i for i, item in enumerate(items) if event_time(item) > T0 + 40 * MINUTE)
    items[at:at] = [consent(T0 + MINUTE, False, cid=quit_), erasure(T0 + MINUTE, cid=gone)]
    items.append(consent(T0 + 2 * MINUTE, False, cid=held))
    return items


def _files(out: Path) -> dict[str, str]:
    return {name: (out / f"{name}.jsonl").read_text() for name in COMPARED}


def test_journeys_give_the_reference_outputs_on_flink(tmp_path: Path) -> None:
    # No holdout: the journeys' post-purchase customer is in the default 5 % control group,
    # and this test is about every trigger's deadline firing, also those far past the input.
    settings = Settings(core=CoreSettings(holdout_share=0.0))
    items = journeys()
    want = reference.run_replay(items, settings, tmp_path / "ref")
    got = flink_pipeline.run_replay(items, settings, tmp_path / "flink")
    decisions = want["decisions"]
    assert decisions.get("post_purchase:emitted") == 1 and decisions.get("win_back:emitted") == 1
    assert decisions.get("cart_abandonment:emitted") == 1
    assert decisions.get("browse_intensity:emitted") == 1
    assert decisions.get("cart_abandonment:suppressed:no_consent") == 1
    assert want["dropped"] == {"duplicate": 1} and want["dead_letters"].get("late") == 1
    assert _files(tmp_path / "flink") == _files(tmp_path / "ref")
    assert got == want
    fired = [json.loads(line) for line in (tmp_path / "flink" / "payloads.jsonl").open()]
    assert {p["trigger"]["type"] for p in fired} == JOURNEY_TRIGGERS


def test_consent_changes_and_erasures_are_never_late_on_flink(tmp_path: Path) -> None:
    settings = Settings()
    items = consent_journeys()
    want = reference.run_replay(items, settings, tmp_path / "ref")
    got = flink_pipeline.run_replay(items, settings, tmp_path / "flink")
    assert want["dead_letters"] == {}
    assert want["decisions"] == {
        "cart_abandonment:emitted": 1,                      # k-held: deliver drops it
        "cart_abandonment:suppressed:no_consent": 2,        # k-quit, k-crm
        "consent_change:consent:revoked": 3,
        "customer_erasure:erased": 1,
    }
    assert (want["erasures"], want["consent_writes"]) == (1, 7)  # 4 grants, 3 revocations
    assert _files(tmp_path / "flink") == _files(tmp_path / "ref")
    assert got == want


def test_a_slice_of_the_shipped_data_gives_the_reference_outputs_on_flink(tmp_path: Path) -> None:
    if not DATA.is_file():
        pytest.fail(f"shipped data missing: {DATA} (the repo expects ../shared/data beside it)")
    settings = Settings()
    items = list(itertools.islice(read_rees46(DATA), 3000))
    want = reference.run_replay(items, settings, tmp_path / "ref")
    got = flink_pipeline.run_replay(items, settings, tmp_path / "flink")
    assert want["payloads"] > 50
    assert _files(tmp_path / "flink") == _files(tmp_path / "ref")
    assert got == want
