"""Consent and erasure are never late, the newest consent statement wins by its own time,
and every consent change is audited and written to the feature store at once (DESIGN.md §8)."""

from __future__ import annotations

import pickle
from dataclasses import replace

from tests.builders import CART_DELAY, HOUR, MINUTE, SECOND, T0, add, consent, erasure, profile
from tests.transforms.drive import consent_audit, decisions, drive, payloads
from transforms.core import Core
from transforms.model import (
    AUDIT,
    CONSENT,
    DEAD_LETTER,
    ERASE,
    ConsentState,
    Output,
)
from transforms.state import CustomerState


def consent_writes(outputs: list[Output]) -> list[ConsentState]:
    return [record for kind, record in outputs if kind == CONSENT]


def cart_decisions(outputs: list[Output]) -> list[str]:
    return [d[3] for d in decisions(outputs) if d[0] == "cart_abandonment"]


# ---------------------------------------------------------------------- never late


def test_a_revocation_15s_behind_the_watermark_is_applied_not_dead_lettered():
    core = Core()
    state, out = drive(core, [profile(), add(T0)], T0 + 30 * SECOND)
    revoke = consent(T0 + 15 * SECOND, False)
    state, out, _ = core.step(state, revoke, watermark=T0 + 30 * SECOND)
    assert not [o for o in out if o[0] == DEAD_LETTER]
    assert consent_audit(out) == [(revoke.event_id, T0 + 15 * SECOND, "consent:revoked")]
    assert consent_writes(out) == [ConsentState("c1", False, T0 + 15 * SECOND)]
    assert not state.has_consent()
    state, out, _ = core.wake(state, T0 + CART_DELAY)
    assert cart_decisions(out) == ["suppressed:no_consent"]


def test_a_late_revocation_is_applied_after_the_customer_was_processed_past_it():
    core = Core()
    state, _ = drive(core, [profile(), add(T0)], T0 + 2 * MINUTE)
    state, out, _ = core.step(state, consent(T0 + MINUTE, False), watermark=T0 + 20 * SECOND)
    assert [o[0] for o in out if o[0] in (AUDIT, CONSENT)] == [AUDIT, CONSENT]
    _, out, _ = core.wake(state, T0 + CART_DELAY)
    assert cart_decisions(out) == ["suppressed:no_consent"]


def test_a_late_erasure_is_applied_not_dead_lettered():
    core = Core()
    state, _ = drive(core, [profile(), add(T0)], T0 + 30 * SECOND)
    state, out, _ = core.step(state, erasure(T0 + 15 * SECOND), watermark=T0 + 30 * SECOND)
    assert not [o for o in out if o[0] == DEAD_LETTER]
    assert (ERASE, "c1") in out
    assert [(a.type, a.decision) for k, a in out if k == AUDIT] == [("customer_erasure", "erased")]
    _, out, _ = core.wake(state, T0 + CART_DELAY)
    assert not payloads(out)


def test_a_late_duplicate_consent_event_is_still_dropped_as_a_duplicate():
    core = Core()
    revoke = consent(T0, False)
    state, _ = drive(core, [profile(), revoke], T0 + MINUTE)
    _, out, _ = core.step(state, revoke, watermark=T0 + MINUTE)
    assert out == [("dropped", "duplicate")]


def test_a_stale_late_revocation_is_audited_as_superseded():
    core = Core()
    state, _ = drive(core, [profile(), consent(T0 + MINUTE, True)], T0 + 2 * MINUTE)
    old = consent(T0, False)
    state, out, _ = core.step(state, old, watermark=T0 + 2 * MINUTE)
    assert consent_audit(out) == [(old.event_id, T0, "consent:superseded")]
    assert consent_writes(out) == []
    assert state.has_consent()


# ---------------------------------------------------------------------- newest statement wins


def test_a_newer_snapshot_does_not_regrant_after_an_explicit_unsubscribe():
    items = [profile(), consent(T0 - 30 * MINUTE, False), profile(T0 - 10 * MINUTE), add(T0)]
    _, out = drive(Core(), items, T0 + 2 * HOUR)
    assert cart_decisions(out) == ["suppressed:no_consent"]


def test_a_snapshot_with_a_newer_consent_time_regrants():
    timed = replace(profile(T0 - 10 * MINUTE), consent_updated_at=T0 - 20 * MINUTE)
    items = [profile(), consent(T0 - 30 * MINUTE, False), timed, add(T0)]
    _, out = drive(Core(), items, T0 + 2 * HOUR)
    assert cart_decisions(out) == ["emitted"]
    assert consent_audit(out)[-1] == ("profile", T0 - 20 * MINUTE, "consent:granted")


def test_a_snapshot_with_an_older_consent_time_does_not_regrant():
    timed = replace(profile(T0 - 10 * MINUTE), consent_updated_at=T0 - 40 * MINUTE)
    items = [profile(), consent(T0 - 30 * MINUTE, False), timed, add(T0)]
    _, out = drive(Core(), items, T0 + 2 * HOUR)
    assert cart_decisions(out) == ["suppressed:no_consent"]


def test_an_untimed_snapshot_may_revoke_a_timed_grant_it_is_newer_than():
    items = [
        profile(consent=False),
        consent(T0 - 30 * MINUTE, True),
        profile(T0 - 10 * MINUTE, consent=False),
        add(T0),
    ]
    _, out = drive(Core(), items, T0 + 2 * HOUR)
    assert cart_decisions(out) == ["suppressed:no_consent"]


def test_a_timed_revocation_beats_an_untimed_snapshot_whatever_its_time():
    # The snapshot's own consent time is unknown: it may predate the revocation.
    core = Core()
    state, _ = drive(core, [profile(T0 - 10 * MINUTE), add(T0)], T0 + MINUTE)
    state, out, _ = core.step(state, consent(T0 - 20 * MINUTE, False), watermark=T0 + MINUTE)
    assert consent_audit(out)[0][2] == "consent:revoked"
    _, out, _ = core.wake(state, T0 + CART_DELAY)
    assert cart_decisions(out) == ["suppressed:no_consent"]


def test_snapshots_without_consent_time_follow_each_other_by_updated_at():
    items = [profile(consent=False), profile(T0 - 10 * MINUTE, consent=True), add(T0)]
    _, out = drive(Core(), items, T0 + 2 * HOUR)
    assert cart_decisions(out) == ["emitted"]


# ---------------------------------------------------------------------- audited, written at once


def test_every_consent_event_is_audited_and_written_when_it_changes_consent():
    grant, revoke, again = (
        consent(T0 + MINUTE, True),
        consent(T0 + 2 * MINUTE, False),
        consent(T0 + 3 * MINUTE, False),
    )
    _, out = drive(Core(), [profile(), grant, revoke, again], T0 + HOUR)
    assert consent_audit(out) == [
        (grant.event_id, T0 + MINUTE, "consent:granted"),
        (revoke.event_id, T0 + 2 * MINUTE, "consent:revoked"),
        (again.event_id, T0 + 3 * MINUTE, "consent:revoked"),
    ]
    assert consent_writes(out) == [
        ConsentState("c1", True, T0 - HOUR),
        ConsentState("c1", False, T0 + 2 * MINUTE),
    ]


def test_a_profile_is_audited_when_it_changes_consent_not_when_it_first_states_it():
    items = [profile(), profile(T0, consent=False), profile(T0 + MINUTE, consent=False)]
    _, out = drive(Core(), items, T0 + HOUR)
    assert consent_audit(out) == [("profile", T0, "consent:revoked")]
    assert consent_writes(out) == [
        ConsentState("c1", True, T0 - HOUR),
        ConsentState("c1", False, T0),
    ]


def test_the_consent_write_comes_with_the_change_not_with_the_write_behind_snapshot():
    core = Core()
    state, _ = drive(core, [profile(), add(T0)], T0 + SECOND)
    state, _, _ = core.step(state, consent(T0 + 2 * SECOND, False))
    _, out, _ = core.wake(state, T0 + 2 * SECOND)  # long before the next feature snapshot
    assert consent_writes(out) == [ConsentState("c1", False, T0 + 2 * SECOND)]


def test_consent_of_states_pickled_before_is_read_safely():
    # Older states hold (granted, as_of): a revocation stays binding against untimed
    # snapshots, a grant can still be revoked by one.
    state = CustomerState("c1")
    values = list(state.__getstate__())
    values[CustomerState.__slots__.index("consent")] = (False, T0)
    old = CustomerState.__new__(CustomerState)
    old.__setstate__(tuple(values))
    assert old.consent == (False, T0, True)
    values[CustomerState.__slots__.index("consent")] = (True, T0)
    old.__setstate__(tuple(values))
    assert old.consent == (True, T0, False)
    assert pickle.loads(pickle.dumps(old)).consent == (True, T0, False)


def test_a_late_consent_change_meets_the_customer_as_of_the_watermark():
    # An adapter that has not woken the customer yet (Beam within a replay batch): the wake the
    # watermark has passed comes first, as on every other engine.
    core = Core()
    state, _, _ = core.step(None, profile())
    state, _, _ = core.step(state, add(T0))
    state, out, _ = core.step(state, consent(T0 + MINUTE, False), watermark=T0 + 2 * HOUR)
    assert cart_decisions(out) == ["emitted"]  # its deadline, T0 + 1 h, had passed
    assert consent_audit(out)[-1][2] == "consent:revoked"
    assert state.processed_until == T0 + 2 * HOUR


def test_a_consent_held_without_a_profile_expires_with_the_rest_of_the_state():
    core = Core()
    state, _, (t,) = core.step(None, consent(T0, False))
    for _ in range(50):  # follow the wakes the core asks for, as an engine would
        state, _, wake = core.wake(state, t)
        if state is None:
            break
        (t,) = wake
    assert state is None
    assert t <= T0 + 31 * 24 * HOUR
