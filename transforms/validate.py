"""Validation of decoded input records: ok, or a (reason, message) pair for the dead-letter output.

    validate_event(BehaviourEvent, CoreSettings, watermark | None) -> (reason, message) | None
    validate_profile(CustomerProfile, CoreSettings)                 -> (reason, message) | None

Reasons are the R_* constants of transforms/model.py. Checks run in this order and the first
failure is reported (reason in brackets):

1. required ids non-empty: `event_id`, `customer_id` [missing_field]
2. strings within `core.max_string_length` characters, at most `core.max_properties`
   properties (events) or consents (profiles) [oversized_field]
3. events: a known `event_type`, `occurred_at` within [1970, 2100) [invalid_value]; and not
   more than `core.max_future` ahead of the watermark, when one is known [future_timestamp]
4. events, by type (what the core needs to act on the event) [missing_field]:
   - product_view, add_to_cart, remove_from_cart: a product with a non-empty id
   - purchase: a product or an order
   - email_open, email_click: the email's message id
   - consent_change: a channel and whether it is granted
   - page_view and customer_erasure: nothing beyond the ids
   and for any type: a present product or order has a non-empty id, an order both id and
   total, a consent both channel and granted, an email campaign its message id (the nested
   records of the wire form must be whole) [missing_field]; price and order total finite and
   >= 0, quantity >= 0 (>= 1 for add_to_cart) and within an Avro int [invalid_value]
5. profiles: `updated_at` within [1970, 2100); `consent_updated_at`, when present, too and
   not after `updated_at`; a well-formed email address (pragmatic: one `@`, no spaces or
   control characters, a dotted domain of letters, digits and hyphens); an IANA time zone
   known to zoneinfo; a BCP 47-like locale (`en`, `en-GB`, `pt_BR`) [invalid_value]
6. consent channels (an event's, a profile's keys) are normalised in place, trimmed and lower
   case ("EMAIL" is "email"), and must be one of `core.consent_channels`; a profile must not
   state one channel twice with different values [invalid_value]

Every value that passes can be written back to Avro (the dead-letter and replay encoders never
raise): timestamps are within an Avro long by the [1970, 2100) bound, quantity within an int,
numbers finite, strings are Python str (JSON input with lone surrogates is refused by the reader).

A profile without email or time zone is valid: the contact policy then sends nothing or uses
UTC. Customer-supplied text (first names) is not judged here; rendering escapes it.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from zoneinfo import available_timezones

from transforms.model import (
    ADD_TO_CART,
    CONSENT_CHANGE,
    EMAIL_CLICK,
    EMAIL_OPEN,
    EVENT_TYPES,
    PRODUCT_VIEW,
    PURCHASE,
    R_FUTURE,
    R_INVALID,
    R_MISSING,
    R_OVERSIZED,
    REMOVE_FROM_CART,
    BehaviourEvent,
    CustomerProfile,
)
from transforms.settings import CoreSettings

Problem = tuple[str, str]

# Timestamps outside [1970-01-01, 2100-01-01) UTC are garbage in this domain, and bounding them
# keeps downstream date arithmetic (quiet hours, expiry) far from datetime's limits.
MAX_TIMESTAMP = 4_102_444_800_000
AVRO_INT_MAX = 2**31 - 1  # quantity is an Avro int
_FLOAT_MAX = sys.float_info.max  # `0 <= x <= _FLOAT_MAX` is False for NaN, inf and negatives

_KNOWN_TYPES = frozenset(EVENT_TYPES)
_NEEDS_PRODUCT = frozenset({PRODUCT_VIEW, ADD_TO_CART, REMOVE_FROM_CART})
_NEEDS_EMAIL = frozenset({EMAIL_OPEN, EMAIL_CLICK})

_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+",
    re.ASCII,
)
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}", re.ASCII)
# Names zoneinfo resolves that are not time zones a customer can live in.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


def validate_event(
    ev: BehaviourEvent, core: CoreSettings, watermark: int | None, *, check_sizes: bool = True
) -> Problem | None:
    """None when `ev` is usable, else (reason, message); see the module docstring for the rules.

    `check_sizes=False` skips the string-length checks (not the property count) for callers
    that know every string is within bounds: the codec, when the whole encoded record is no
    longer than `core.max_string_length` bytes (a hot-path saving of about a microsecond).
    """
    if not ev.event_id:
        return R_MISSING, "event_id is empty"
    if not ev.customer_id:
        return R_MISSING, "customer_id is empty"
    props = ev.properties
    if props and len(props) > core.max_properties:
        return R_OVERSIZED, f"{len(props)} properties (max {core.max_properties})"
    if check_sizes:
        oversized = _event_sizes(ev, core.max_string_length)
        if oversized:
            return R_OVERSIZED, oversized
    etype = ev.event_type
    if etype not in _KNOWN_TYPES:
        return R_INVALID, f"unknown event_type {etype[:64]!r}"
    at = ev.occurred_at
    if not 0 <= at < MAX_TIMESTAMP:
        return R_INVALID, f"occurred_at {at} outside [1970, 2100)"
    if watermark is not None and at > watermark + core.max_future:
        return R_FUTURE, f"occurred_at {at} is {at - watermark} ms ahead of the watermark"
    product = ev.product
    if product is None:
        if etype in _NEEDS_PRODUCT:
            return R_MISSING, f"{etype} without a product"
    else:
        if not product.product_id:
            return R_MISSING, "product.product_id is empty"
        price = product.price
        if price is not None and not 0.0 <= price <= _FLOAT_MAX:
            return R_INVALID, f"price {price} is negative or not finite"
    quantity = ev.quantity
    if quantity is not None and (
        quantity < 0 or quantity > AVRO_INT_MAX or (quantity == 0 and etype == ADD_TO_CART)
    ):
        return R_INVALID, f"quantity {quantity} of {etype}"
    # The flattened nested records of the wire form must be whole to be written back.
    total = ev.order_total
    if (ev.order_id is None) != (total is None) or ev.order_id == "":
        return R_MISSING, "an order needs a non-empty order_id and a total"
    if total is not None and not 0.0 <= total <= _FLOAT_MAX:
        return R_INVALID, f"order total {total} is negative or not finite"
    if ev.email_campaign is not None and ev.email_message_id is None:
        return R_MISSING, "email.campaign without email.message_id"
    if (ev.consent_channel is None) != (ev.consent_granted is None):
        return R_MISSING, "a consent needs both channel and granted"
    if etype == PURCHASE:
        if product is None and ev.order_id is None:
            return R_MISSING, "purchase without a product or an order"
    elif etype in _NEEDS_EMAIL:
        if not ev.email_message_id:
            return R_MISSING, f"{etype} without email.message_id"
    elif etype == CONSENT_CHANGE and not ev.consent_channel:
        return R_MISSING, "consent_change without consent.channel and consent.granted"
    channel = ev.consent_channel
    if channel is not None:
        ev.consent_channel = channel = channel.strip().lower()
        known = _channels(core.consent_channels)
        if channel not in known:
            return R_INVALID, _unknown_channel(channel, known)
    return None


def validate_profile(p: CustomerProfile, core: CoreSettings) -> Problem | None:
    """None when the profile is usable, else (reason, message); see the module docstring."""
    if not p.customer_id:
        return R_MISSING, "customer_id is empty"
    limit = core.max_string_length
    for name, value in (
        ("customer_id", p.customer_id), ("email", p.email), ("first_name", p.first_name),
        ("locale", p.locale), ("time_zone", p.time_zone), ("lifecycle_stage", p.lifecycle_stage),
    ):
        if value is not None and len(value) > limit:
            return R_OVERSIZED, f"{name} has {len(value)} characters (max {limit})"
    if len(p.consents) > core.max_properties:
        return R_OVERSIZED, f"{len(p.consents)} consents (max {core.max_properties})"
    for channel in p.consents:
        if len(channel) > limit:
            return R_OVERSIZED, f"consent channel has {len(channel)} characters (max {limit})"
    if not 0 <= p.updated_at < MAX_TIMESTAMP:
        return R_INVALID, f"updated_at {p.updated_at} outside [1970, 2100)"
    consent_at = p.consent_updated_at
    if consent_at is not None:
        if not 0 <= consent_at < MAX_TIMESTAMP:
            return R_INVALID, f"consent_updated_at {consent_at} outside [1970, 2100)"
        if consent_at > p.updated_at:
            return R_INVALID, f"consent_updated_at {consent_at} is after updated_at {p.updated_at}"
    if p.consents:
        problem = _normalise_consents(p, _channels(core.consent_channels))
        if problem is not None:
            return R_INVALID, problem
    if p.email is not None and not _EMAIL.fullmatch(p.email):
        return R_INVALID, f"malformed email address {p.email[:64]!r}"
    if p.time_zone is not None and p.time_zone not in _time_zones():
        return R_INVALID, f"unknown time zone {p.time_zone[:64]!r}"
    if p.locale is not None and not _LOCALE.fullmatch(p.locale):
        return R_INVALID, f"malformed locale {p.locale[:64]!r}"
    return None


def _normalise_consents(p: CustomerProfile, known: frozenset[str]) -> str | None:
    """Lower-case the profile's consent channels in place; a message if one is unusable."""
    consents: dict[str, bool] = {}
    for name, granted in p.consents.items():
        channel = name.strip().lower()
        if channel not in known:
            return _unknown_channel(channel, known)
        if consents.get(channel, granted) != granted:
            return f"consent channel {channel!r} stated twice"
        consents[channel] = granted
    p.consents = consents
    return None


def _unknown_channel(channel: str, known: frozenset[str]) -> str:
    return f"unknown consent channel {channel[:64]!r} (known: {', '.join(sorted(known))})"


@cache
def _channels(setting: str) -> frozenset[str]:
    return frozenset(c.strip().lower() for c in setting.split(",") if c.strip())


@cache
def _time_zones() -> frozenset[str]:
    # A set lookup rather than ZoneInfo(name): hostile names never touch the file system.
    return frozenset(available_timezones()) - _NOT_ZONES


def _event_sizes(ev: BehaviourEvent, limit: int) -> str | None:
    """A message naming the first string longer than `limit` characters, else None."""
    product = ev.product
    for name, value in (
        ("event_id", ev.event_id), ("customer_id", ev.customer_id), ("event_type", ev.event_type),
        ("session_id", ev.session_id), ("order_id", ev.order_id),
        ("email_message_id", ev.email_message_id), ("email_campaign", ev.email_campaign),
        ("consent_channel", ev.consent_channel),
    ):
        if value is not None and len(value) > limit:
            return f"{name} has {len(value)} characters (max {limit})"
    if product is not None:
        for name, value in (
            ("product_id", product.product_id), ("category", product.category),
            ("brand", product.brand),
        ):
            if value is not None and len(value) > limit:
                return f"product.{name} has {len(value)} characters (max {limit})"
    for key, value in (ev.properties or {}).items():
        if len(key) > limit or len(value) > limit:
            return f"property {key[:64]!r} beyond {limit} characters"
    return None
