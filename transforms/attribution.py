"""Attribution and the holdout group: the keyed half of the learning loop (DESIGN.md section 9).

Each customer remembers the messages the policy let through, emitted or held out, as
`Sent` entries (fired_at, message_id, trigger type, holdout), for the attribution
window after their send and at most `max_attributed_messages` of them (the oldest evicted
first, counted `evicted:messages`). Against them:

    email_open / email_click   an outcome of kind open / click (value 0) of the message its
                               email.message_id names, when that is one of this customer's
                               remembered messages and fired_at <= occurred_at <=
                               fired_at + attribution_window. Unknown or foreign ids, events
                               before the send and after the window, and opens or clicks of
                               a held-out message (never sent: they are forged): no outcome.
    purchase                   last touch: an outcome of kind purchase, value the revenue the
                               core counts for the event (line price x quantity, else the
                               order total, else 0), of the customer's latest message with
                               fired_at <= occurred_at <= fired_at + attribution_window.

Every attributed event is one outcome record, so repeated opens of one message are several
records (the bandit counts distinct rewarded messages). The window is closed: an event at
exactly fired_at + window is attributed, one a millisecond later is not. At one instant the
core processes events before it decides the fires of that instant, so an event at the very
millisecond of a send is not attributed to it.

Holdout: `in_holdout(customer_id, share, salt)` puts a stable `share` of customers (SHA-256
of salt and customer id, the same in every process and engine) in the global control group.
The policy applies it last (transforms/policy.py): the control group is those who would have
got the email. Their would-be message is audited `suppressed:holdout`, has no payload, counts
against the frequency caps as a send would (so control mirrors treatment), and is remembered
here with holdout True, so their conversions are attributed to it.

Outcomes leave this stage with variant None: the arms stage (transforms/bandit.py) chose the
variant of each message and fills it in (holdout messages have none).
"""

from __future__ import annotations

import hashlib

from transforms.model import EMAIL_CLICK, EMAIL_OPEN, PURCHASE, BehaviourEvent, Outcome

EVICTED_MESSAGES = "evicted:messages"

OPEN = "open"
CLICK = "click"
KINDS = {EMAIL_OPEN: OPEN, EMAIL_CLICK: CLICK, PURCHASE: PURCHASE}

# (fired_at, message_id, trigger_type, holdout): a plain tuple pickles in C.
Sent = tuple[int, str, str, bool]

_SCALE = 1 << 64


def in_holdout(customer_id: str, share: float, salt: str) -> bool:
    """True when the customer is in the control group: the first 8 bytes of SHA-256(salt,
    NUL, customer id) as a fraction of 2**64 below `share` (0 or less: nobody)."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{salt}\0{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * _SCALE


def remember(messages: list[Sent], sent: Sent, cap: int) -> int:
    """Add a message (messages are in fired_at order: sends come in event-time order); over
    `cap`, the oldest go. Returns how many were evicted."""
    messages.append(sent)
    over = len(messages) - max(1, cap)
    if over <= 0:
        return 0
    del messages[:over]
    return over


def attribute(
    messages: list[Sent], ev: BehaviourEvent, revenue: float, window: int
) -> Outcome | None:
    """The outcome `ev` is of one of `messages` (see the module docstring), or None.
    `revenue`: what the core counts for a purchase (ignored for the other kinds)."""
    kind = KINDS.get(ev.event_type)
    if kind is None or not messages:
        return None
    t = ev.occurred_at
    if kind == PURCHASE:
        touch: Sent | None = None
        for sent in messages:
            if sent[0] <= t <= sent[0] + window and (touch is None or sent[0] >= touch[0]):
                touch = sent
        if touch is None:
            return None
        return _outcome(touch, ev, kind, revenue)
    mid = ev.email_message_id
    if not mid:
        return None
    for sent in messages:
        if sent[1] == mid and sent[0] <= t <= sent[0] + window and not sent[3]:
            return _outcome(sent, ev, kind, 0.0)
    return None


def _outcome(sent: Sent, ev: BehaviourEvent, kind: str, value: float) -> Outcome:
    fired_at, mid, trigger_type, holdout = sent
    return Outcome(
        message_id=mid,
        customer_id=ev.customer_id,
        trigger_type=trigger_type,
        variant=None,
        kind=kind,
        value=float(value),
        occurred_at=ev.occurred_at,
        fired_at=fired_at,
        holdout=holdout,
        event_id=ev.event_id,
    )


def purge(messages: list[Sent], now: int, window: int) -> list[Sent]:
    """The messages whose window has not ended by `now`."""
    return [m for m in messages if m[0] + window >= now]


def expires_at(messages: list[Sent], window: int) -> int | None:
    """When the last remembered message's window ends (None: nothing held)."""
    return max(m[0] for m in messages) + window if messages else None
