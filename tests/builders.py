"""Named instants and event builders shared by the tests (time is data, never the wall clock)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from transforms.model import (
    ADD_TO_CART,
    CONSENT_CHANGE,
    CUSTOMER_ERASURE,
    EMAIL_CHANNEL,
    PRODUCT_VIEW,
    PURCHASE,
    REMOVE_FROM_CART,
    BehaviourEvent,
    CustomerProfile,
    Product,
)
from transforms.settings import HOUR, MINUTE, SECOND

# Monday 2026-01-05 12:00 UTC: mid-day, far from quiet hours in UTC.
T0 = int(datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp() * 1000)
CART_DELAY = HOUR
BROWSE_WINDOW = 30 * MINUTE

_ids = itertools.count(1)
CID = "c1"


def _eid(prefix: str) -> str:
    return f"{prefix}-{next(_ids):06d}"


def profile(
    t: int = T0 - HOUR,
    cid: str = CID,
    consent: bool = True,
    tz: str = "UTC",
    email: str | None = "ada@example.com",
    name: str | None = "Ada",
) -> CustomerProfile:
    return CustomerProfile(
        customer_id=cid,
        updated_at=t,
        email=email,
        first_name=name,
        locale="en-GB",
        time_zone=tz,
        consents={EMAIL_CHANNEL: consent},
    )


def product(pid: str = "p1", category: str = "shoes", price: float = 50.0) -> Product:
    return Product(product_id=pid, category=category, brand="acme", price=price)


def event(
    etype: str, t: int, cid: str = CID, eid: str | None = None, **kw: object
) -> BehaviourEvent:
    return BehaviourEvent(
        event_id=eid or _eid(etype),
        customer_id=cid,
        event_type=etype,
        occurred_at=t,
        session_id="s1",
        **kw,
    )  # type: ignore[arg-type]


def view(t: int, pid: str = "p1", category: str = "shoes", **kw: object) -> BehaviourEvent:
    return event(PRODUCT_VIEW, t, product=product(pid, category), **kw)


def add(
    t: int, pid: str = "p1", category: str = "shoes", qty: int = 1, **kw: object
) -> BehaviourEvent:
    return event(ADD_TO_CART, t, product=product(pid, category), quantity=qty, **kw)


def remove(t: int, pid: str = "p1", category: str = "shoes", **kw: object) -> BehaviourEvent:
    return event(REMOVE_FROM_CART, t, product=product(pid, category), quantity=1, **kw)


def purchase(
    t: int, pid: str = "p1", category: str = "shoes", price: float = 50.0, **kw: object
) -> BehaviourEvent:
    return event(PURCHASE, t, product=product(pid, category, price), quantity=1, **kw)


def consent(t: int, granted: bool, **kw: object) -> BehaviourEvent:
    return event(CONSENT_CHANGE, t, consent_channel=EMAIL_CHANNEL, consent_granted=granted, **kw)


def erasure(t: int, **kw: object) -> BehaviourEvent:
    return event(CUSTOMER_ERASURE, t, **kw)


__all__ = ["T0", "HOUR", "MINUTE", "SECOND", "CART_DELAY", "BROWSE_WINDOW"]
