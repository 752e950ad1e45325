"""Contact policy, applied to the triggers that fired for one customer at one event time.

Order (DESIGN.md section 4), each suppression an audit decision `suppressed:<reason>`:

    erased         the customer asked to be forgotten (tombstone within erasure_ttl)
    segment        the trigger type is limited to segments the customer is not in
                   (core.trigger_segments, transforms/segments.py SegmentLimits); checked
                   before consent because it is targeting: a trigger never meant for the
                   customer is not a candidate, so it takes no priority slot from one that is
    no_consent     no email consent as of the fire time (the statement that won: consent
                   events and profiles, see state.CustomerState.set_consent)
    no_address     consent, but no email address on file
    priority       several fired at this instant: only the first (priority, type, key) goes
                   on (priority: the order of the setting core.trigger_priority)
    frequency_cap  max_per_day payloads in (t - cap_window, t], or one of this type already
    holdout        the customer is in the global control group (transforms/attribution.py):
                   applied last, so it holds back exactly what would have been sent
    (quiet hours)  not a suppression: send_after = next quiet_end_hour local time

A suppressed trigger does not count against the caps, except a holdout one: it counts as the
send it stands for, so the control group's later fires mirror the treatment group's.

Consent changes are audit decisions too (type consent_change, see transforms/core.py):
`consent:granted`, `consent:revoked`, or `consent:superseded` for a consent event that lost
to the statement held (state.CustomerState.set_consent).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from transforms.attribution import in_holdout
from transforms.model import FiredTrigger
from transforms.settings import CoreSettings
from transforms.state import CustomerState

EMITTED = "emitted"
ERASED = "erased"
NO_CONSENT = "no_consent"
NO_ADDRESS = "no_address"
PRIORITY = "priority"
FREQUENCY_CAP = "frequency_cap"
HOLDOUT = "holdout"
SEGMENT = "segment"
CONSENT_GRANTED = "consent:granted"
CONSENT_REVOKED = "consent:revoked"
CONSENT_SUPERSEDED = "consent:superseded"


def decide(
    state: CustomerState,
    fires: list[FiredTrigger],
    t: int,
    settings: CoreSettings,
    priorities: dict[str, int],
    allowed: Callable[[str], bool] | None = None,
) -> list[tuple[FiredTrigger, str | None]]:
    """Each fire with its suppression reason, or None for the one that goes on.

    `allowed(trigger_type)`: False when the customer's segment is outside the type's limits
    (None: no limits)."""
    last = len(priorities)  # a type without a rank: after all ranked ones, by name
    fires = sorted(fires, key=lambda f: (priorities.get(f.type, last), f.type, f.key))
    if state.erased_at is not None:
        return [(f, ERASED) for f in fires]
    if allowed is not None:
        limited = [(f, SEGMENT) for f in fires if not allowed(f.type)]
        if limited:
            rest = [f for f in fires if allowed(f.type)]
            return limited + (decide(state, rest, t, settings, priorities) if rest else [])
    if not state.has_consent():
        return [(f, NO_CONSENT) for f in fires]
    profile = state.profile
    if profile is None or not profile.email:
        return [(f, NO_ADDRESS) for f in fires]
    first, rest = fires[0], fires[1:]
    reason: str | None = None
    if capped(state.sent, first.type, t, settings):
        reason = FREQUENCY_CAP
    elif in_holdout(state.customer_id, settings.holdout_share, settings.holdout_salt):
        reason = HOLDOUT
    decisions: list[tuple[FiredTrigger, str | None]] = [(first, reason)]
    decisions += [(f, PRIORITY) for f in rest]
    return decisions


def capped(sent: list[tuple[int, str]], trigger_type: str, t: int, settings: CoreSettings) -> bool:
    """True when the caps over (t - cap_window, t] forbid another payload of this type."""
    lo = t - settings.cap_window
    recent = [kind for at, kind in sent if lo < at <= t]
    if len(recent) >= settings.max_per_day:
        return True
    return recent.count(trigger_type) >= settings.max_per_type_per_day


@lru_cache(maxsize=512)
def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The IANA zone `name`, or `default` when absent or unknown."""
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def send_after(fired_at: int, time_zone: str | None, settings: CoreSettings) -> int | None:
    """Quiet hours: the next `quiet_end_hour` local time if fired_at is inside them, else None."""
    tz = zone(time_zone, settings.default_time_zone)
    local = datetime.fromtimestamp(fired_at / 1000, tz=UTC).astimezone(tz)
    start, end = settings.quiet_start_hour, settings.quiet_end_hour
    hour = local.hour
    quiet = (hour >= start or hour < end) if start > end else (start <= hour < end)
    if not quiet:
        return None
    day = local.date() if hour < end else local.date() + timedelta(days=1)
    wake = datetime(day.year, day.month, day.day, end, tzinfo=tz)
    # Round-trip through UTC so a DST gap lands on a real instant.
    return int(wake.astimezone(UTC).timestamp() * 1000)


def expires_at(fired_at: int, send_after_at: int | None, settings: CoreSettings) -> int:
    """After this instant the ESP must not send the payload."""
    return (send_after_at if send_after_at is not None else fired_at) + settings.payload_ttl
