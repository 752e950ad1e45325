"""Waking at t in one call or in several calls t1 < ... < t gives the same outputs.

Engines split wakes differently (the reference runner at each timer, Beam at a safe watermark
capped by its SignalGate, so sometimes in several partial wakes), and a purge runs at the end
of each wake: what the rules and the snapshots read must not depend on when purges ran. The
hostile case is the one the merged triggers exposed: win-back fires 30 d after the last
activity, long after the cart (cart_ttl, 7 d) expired, and its snapshot counted the cart lines
only if no purge had run in between.
"""

from __future__ import annotations

from tests.builders import HOUR, MINUTE, T0, add, consent, erasure, profile, purchase, view
from tests.transforms.test_price_drop import SIGNAL_AT, signal
from transforms.catalog_changes import PRICE_DROP, CatalogSignal
from transforms.core import Core
from transforms.model import AUDIT, CONSENT, DROPPED, FEATURES, PAYLOAD
from transforms.settings import DAY, CoreSettings
from transforms.windows import PURCHASE_WINDOW

CART_TTL = 7 * DAY
LAST = T0 + MINUTE                       # the last activity: a cart add after a purchase
CART_GONE = LAST + CART_TTL              # the last instant the cart is still held
WIN_BACK = LAST + 30 * DAY               # win-back's deadline (30 d after the last activity)


def run(core: Core, items: list, wakes: list[int]) -> list[str]:
    """Step `items` (no watermark), then wake at each of `wakes` in turn: every output."""
    state = None
    out: list = []
    for item in items:
        state, o, _ = core.step(state, item)
        out += o
    for t in wakes:
        state, o, _ = core.wake(state, t)
        out += o
    return [f"{kind} {record!r}" for kind, record in out]


def snapshots(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(f"{FEATURES} ")]


def journey() -> list:
    return [profile(T0 - HOUR), purchase(T0, "p1"), add(LAST, "p2"), add(LAST, "p3")]


def test_win_back_snapshot_is_the_same_whether_a_purge_ran_after_the_cart_expired():
    items = journey()  # one set of event ids for every run
    whole = run(Core(), items, [WIN_BACK])
    for splits in ([CART_GONE + 1, WIN_BACK], [CART_GONE, WIN_BACK], [WIN_BACK - 1, WIN_BACK],
                   [T0 + HOUR, T0 + 2 * DAY, CART_GONE + HOUR, WIN_BACK]):
        assert run(Core(), items, splits) == whole, splits
    last = snapshots(whole)[-1]
    assert f"as_of={WIN_BACK}" in last and "'cart_items': 0" in last  # expired: no lines


def test_the_cart_is_held_at_its_last_instant_and_gone_one_ms_later():
    # Cart abandonment at exactly cart_ttl after the change still sees the cart; 1 ms later
    # it sees none, in one wake or after a purge in between.
    for delay, fires in ((CART_TTL, True), (CART_TTL + 1, False)):
        settings = CoreSettings(cart_delay=delay, win_back_delay=0)
        items = [profile(T0 - HOUR), add(T0, "p2")]
        deadline = T0 + delay
        whole = run(Core(settings), items, [deadline])
        split = run(Core(settings), items, [T0 + 2 * DAY, deadline - 1, deadline])
        assert split == whole
        emitted = [line for line in whole if line.startswith(f"{AUDIT} ") and "emitted" in line]
        assert bool(emitted) is fires, (delay, whole)


def test_a_cart_add_after_the_cart_expired_starts_a_new_cart():
    # p1 added at T0, p2 eight days later: without a purge in between, p1 used to be still in
    # the cart the abandonment fires with; now it is gone whatever the wakes.
    items = [profile(T0 - HOUR), add(T0, "p1"), add(T0 + 8 * DAY, "p2")]
    fire = T0 + 8 * DAY + HOUR
    whole = run(Core(), items, [fire])
    assert run(Core(), items, [T0 + 2 * HOUR, T0 + 7 * DAY + 1, fire]) == whole
    fired = [line for line in whole
             if line.startswith(f"{PAYLOAD} ") and f"fired_at={fire}" in line]
    assert len(fired) == 1 and "evidence=['p2']" in fired[0]


def test_last_activity_leaves_the_snapshot_30_days_on_whatever_the_wakes():
    # Win-back 40 d after a view: the last activity is past the purchase window (30 d) then.
    settings = CoreSettings(win_back_delay=40 * DAY)
    items = [profile(T0 - HOUR), purchase(T0, "p1"), view(T0 + MINUTE, "p2")]
    deadline = T0 + MINUTE + 40 * DAY
    whole = run(Core(settings), items, [deadline])
    gone = T0 + MINUTE + PURCHASE_WINDOW
    for splits in ([gone, deadline], [gone + 1, deadline], [gone - 1, deadline]):
        assert run(Core(settings), items, splits) == whole, splits
    assert "'last_activity_at': None" in snapshots(whole)[-1]


def test_the_erasure_tombstone_ends_at_erasure_ttl_whatever_the_wakes():
    # A view at the tombstone's last instant is dropped as erased; one 1 ms later is processed,
    # in one wake or after a purge between the expiry and the view.
    ttl = CoreSettings().erasure_ttl
    for at, dropped in ((T0 + ttl, True), (T0 + ttl + 1, False)):
        items = [profile(T0 - HOUR), erasure(T0), view(at, "p1")]
        whole = run(Core(), items, [at + 2 * MINUTE])
        for splits in ([T0 + ttl, at + 2 * MINUTE], [at - 1, at + 2 * MINUTE]):
            assert run(Core(), items, splits) == whole, (at, splits)
        assert (f"{DROPPED} 'erased'" in whole) is dropped
        assert any(line.startswith(f"{FEATURES} ") for line in whole) is not dropped


def test_an_expired_profile_is_gone_for_a_price_drop_whatever_the_wakes():
    # profile_ttl 1 d, nothing armed (win-back off): a price drop two days after the view
    # meets no profile, whether or not a purge ran after the profile expired.
    settings = CoreSettings(profile_ttl=DAY, win_back_delay=0)
    items = [profile(T0 - HOUR), view(T0 + HOUR, "p1"), signal()]
    wm = SIGNAL_AT - 1
    whole = run_with_signal(Core(settings), items, [SIGNAL_AT], wm)
    gone = T0 + HOUR + DAY            # the last touch (the view) + profile_ttl
    for splits in ([gone, SIGNAL_AT], [gone + 1, SIGNAL_AT], [SIGNAL_AT - 1, SIGNAL_AT]):
        assert run_with_signal(Core(settings), items, splits, wm) == whole, splits
    audits = [line for line in whole if line.startswith(f"{AUDIT} ") and PRICE_DROP in line]
    assert len(audits) == 1 and "emitted" not in audits[0]


def run_with_signal(core: Core, items: list, wakes: list[int], wm: int) -> list[str]:
    """run(), the catalog signal stepped with its own watermark (as every adapter does)."""
    state = None
    out: list = []
    for item in items:
        state, o, _ = core.step(state, item, wm if isinstance(item, CatalogSignal) else None)
        out += o
    for t in wakes:
        state, o, _ = core.wake(state, t)
        out += o
    return [f"{kind} {record!r}" for kind, record in out]


def test_a_late_consent_meets_an_expired_consent_as_gone_whatever_the_wakes():
    # Consent granted by the profile, expired a day after the last touch (profile_ttl 1 d); a
    # late grant at T0 + 4 d is a change (written to the feature store) whether or not a purge
    # ran in between.
    settings = CoreSettings(profile_ttl=DAY, win_back_delay=0)
    late = consent(T0 + 4 * DAY, True)
    watermark = T0 + 5 * DAY
    runs = []
    for wakes in ([watermark], [T0 + 2 * HOUR, watermark]):
        core = Core(settings)
        state = None
        out: list = []
        for item in [profile(T0 - HOUR), view(T0, "p1", eid="v1")]:
            state, o, _ = core.step(state, item)
            out += o
        for t in wakes:
            state, o, _ = core.wake(state, t)
            out += o
        state, o, _ = core.step(state, late, watermark)
        runs.append([f"{kind} {record!r}" for kind, record in out + o])
    assert runs[0] == runs[1]
    assert sum(line.startswith(f"{CONSENT} ") for line in runs[0]) == 2  # the profile's, then
