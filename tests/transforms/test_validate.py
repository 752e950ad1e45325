from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.builders import T0, add, consent, event, profile, purchase, remove, view
from transforms.model import (
    ADD_TO_CART,
    CUSTOMER_ERASURE,
    EMAIL_CLICK,
    EMAIL_OPEN,
    PAGE_VIEW,
    PURCHASE,
    R_FUTURE,
    R_INVALID,
    R_MISSING,
    R_OVERSIZED,
    BehaviourEvent,
    CustomerProfile,
    Product,
)
from transforms.settings import CoreSettings
from transforms.validate import MAX_TIMESTAMP, validate_event, validate_profile

CORE = CoreSettings(max_string_length=32, max_properties=2)
LONG = "x" * 33


def with_(ev: BehaviourEvent, **changes: Any) -> BehaviourEvent:
    return dataclasses.replace(ev, **changes)


@pytest.mark.parametrize("ev", [
    view(T0), add(T0), remove(T0), purchase(T0), consent(T0, False), consent(T0, True),
    event(EMAIL_OPEN, T0, email_message_id="m1"),
    event(EMAIL_CLICK, T0, email_message_id="m1", email_campaign="weekly"),
    event(PAGE_VIEW, T0), event(CUSTOMER_ERASURE, T0),
    event(PURCHASE, T0, order_id="o1", order_total=0.0),
    with_(view(T0), product=Product("p1"), properties={"a": "b", "c": "d"}),
    with_(add(T0), quantity=None), with_(purchase(T0), quantity=0),
], ids=lambda ev: ev.event_type)
def test_valid_events_pass(ev: BehaviourEvent) -> None:
    assert validate_event(ev, CORE, T0) is None


@pytest.mark.parametrize("ev, reason, words", [
    (with_(view(T0), event_id=""), R_MISSING, "event_id"),
    (with_(view(T0), customer_id=""), R_MISSING, "customer_id"),
    (with_(view(T0), event_type="teleport"), R_INVALID, "unknown event_type"),
    (with_(view(T0), occurred_at=-1), R_INVALID, "occurred_at"),
    (with_(view(T0), occurred_at=MAX_TIMESTAMP), R_INVALID, "occurred_at"),
    (with_(view(T0), product=None), R_MISSING, "product"),
    (with_(add(T0), product=None), R_MISSING, "product"),
    (with_(remove(T0), product=None), R_MISSING, "product"),
    (with_(view(T0), product=Product("")), R_MISSING, "product_id"),
    (with_(view(T0), product=Product("p", price=-0.01)), R_INVALID, "price"),
    (with_(view(T0), product=Product("p", price=float("nan"))), R_INVALID, "price"),
    (with_(view(T0), product=Product("p", price=float("inf"))), R_INVALID, "price"),
    (with_(add(T0), quantity=0), R_INVALID, "quantity"),
    (with_(purchase(T0), quantity=-1), R_INVALID, "quantity"),
    (with_(purchase(T0), product=None), R_MISSING, "purchase"),
    (with_(purchase(T0), order_id="o1", order_total=-5.0), R_INVALID, "order total"),
    (with_(purchase(T0), order_id="o1"), R_MISSING, "order"),
    (with_(purchase(T0), order_total=5.0), R_MISSING, "order"),
    (with_(purchase(T0), order_id="", order_total=5.0), R_MISSING, "order"),
    (event(EMAIL_OPEN, T0), R_MISSING, "email.message_id"),
    (event(EMAIL_CLICK, T0, email_message_id=""), R_MISSING, "email.message_id"),
    (event(PAGE_VIEW, T0, email_campaign="weekly"), R_MISSING, "campaign"),
    (with_(consent(T0, True), consent_granted=None), R_MISSING, "consent"),
    (with_(consent(T0, True), consent_channel=None), R_MISSING, "consent"),
    (with_(consent(T0, True), consent_channel=""), R_MISSING, "consent"),
    (with_(view(T0), session_id=LONG), R_OVERSIZED, "session_id"),
    (with_(view(T0), product=Product("p", category=LONG)), R_OVERSIZED, "product.category"),
    (with_(view(T0), properties={"a": LONG}), R_OVERSIZED, "property"),
    (with_(view(T0), properties={LONG: "a"}), R_OVERSIZED, "property"),
    (with_(view(T0), properties={"a": "", "b": "", "c": ""}), R_OVERSIZED, "3 properties"),
    (with_(view(T0), event_type=LONG), R_OVERSIZED, "event_type"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_events_name_the_reason(ev: BehaviourEvent, reason: str, words: str) -> None:
    problem = validate_event(ev, CORE, T0)
    assert problem is not None
    assert problem[0] == reason
    assert words in problem[1]


def test_future_is_relative_to_the_watermark_and_only_when_one_is_known() -> None:
    late = view(T0 + CORE.max_future + 1)
    assert validate_event(late, CORE, T0 + 1) is None
    assert validate_event(late, CORE, T0) == (R_FUTURE, f"occurred_at {late.occurred_at} is "
                                              f"{CORE.max_future + 1} ms ahead of the watermark")
    assert validate_event(late, CORE, None) is None


def test_size_checks_can_be_skipped_but_not_the_property_count() -> None:
    long_session = with_(view(T0), session_id=LONG)
    assert validate_event(long_session, CORE, T0, check_sizes=False) is None
    many = with_(view(T0), properties={"a": "", "b": "", "c": ""})
    assert validate_event(many, CORE, T0, check_sizes=False) == (
        R_OVERSIZED, "3 properties (max 2)")


def test_add_to_cart_quantity_zero_is_refused_but_other_types_accept_it() -> None:
    assert validate_event(with_(add(T0), quantity=0), CORE, T0) is not None
    assert validate_event(with_(remove(T0), quantity=0), CORE, T0) is None
    assert validate_event(event(ADD_TO_CART, T0, product=Product("p")), CORE, T0) is None


# -- profiles ------------------------------------------------------------------------------

@pytest.mark.parametrize("email", [
    "ada@example.com", "a.b+tag@sub.example.co.uk", "123@example.invalid", "o'brien@x-y.org",
])
def test_well_formed_emails_pass(email: str) -> None:
    assert validate_profile(profile(T0, email=email), CoreSettings()) is None


@pytest.mark.parametrize("email", [
    "", "ada", "ada@", "@example.com", "ada@example", "ada@@example.com", "a da@example.com",
    "ada@example.com\n", "ada@example.com\r\nBcc: x@y.z", "ada@-example.com", "ada@exa_mple.com",
    "<script>@example.com", "ada@example..com",
])
def test_malformed_emails_are_invalid(email: str) -> None:
    problem = validate_profile(profile(T0, email=email), CoreSettings())
    assert problem is not None and problem[0] == R_INVALID and "email" in problem[1]


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/St_Johns", "UTC", "Asia/Kolkata"])
def test_iana_time_zones_pass(tz: str) -> None:
    assert validate_profile(profile(T0, tz=tz), CoreSettings()) is None


@pytest.mark.parametrize("tz", ["", "Mars/Olympus", "Europe", "../../etc/passwd", "localtime",
                                "europe/paris", "+02:00"])
def test_unknown_time_zones_are_invalid(tz: str) -> None:
    problem = validate_profile(profile(T0, tz=tz), CoreSettings())
    assert problem is not None and problem[0] == R_INVALID and "time zone" in problem[1]


@pytest.mark.parametrize("locale, ok", [
    ("en", True), ("en-GB", True), ("pt_BR", True), ("zh-Hant-TW", True),
    ("", False), ("english please", False), ("e", False), ("<b>", False),
])
def test_locales(locale: str, ok: bool) -> None:
    p = profile(T0)
    p.locale = locale
    assert (validate_profile(p, CoreSettings()) is None) is ok


def test_profile_requirements_and_bounds() -> None:
    assert validate_profile(profile(T0, email=None, name=None), CORE) is None  # nothing to send
    assert validate_profile(CustomerProfile("c1", T0), CORE) is None
    assert validate_profile(profile(T0, cid=""), CORE) == (R_MISSING, "customer_id is empty")
    hostile = profile(T0, email="a@b.co", name="{{ 7*7 }}<s>")
    assert validate_profile(hostile, CoreSettings()) is None  # rendering escapes it
    assert validate_profile(profile(T0, email="a@b.co", name=LONG), CORE) == (
        R_OVERSIZED, "first_name has 33 characters (max 32)")
    many = CustomerProfile("c1", T0, consents={"email": True, "sms": False, "push": True})
    assert validate_profile(many, CORE) == (R_OVERSIZED, "3 consents (max 2)")
    assert validate_profile(CustomerProfile("c1", -5), CORE) == (
        R_INVALID, "updated_at -5 outside [1970, 2100)")


@pytest.mark.parametrize("qty, ok", [(2**31 - 1, True), (2**31, False), (2**63, False)])
def test_quantity_must_fit_an_avro_int(qty: int, ok: bool) -> None:
    from transforms.codec import encode_event

    ev = add(T0, qty=qty)
    problem = validate_event(ev, CoreSettings(), None)
    if ok:
        assert problem is None
        encode_event(ev)
    else:
        assert problem is not None and problem[0] == R_INVALID and "quantity" in problem[1]


def test_consent_channels_are_case_insensitive() -> None:
    ev = with_(consent(T0, False), consent_channel=" EMAIL ")
    assert validate_event(ev, CORE, None) is None
    assert ev.consent_channel == "email"
    p = CustomerProfile("c1", T0, consents={"Email": False})
    assert validate_profile(p, CORE) is None
    assert p.consents == {"email": False}


def test_an_unknown_consent_channel_is_a_dead_letter_not_ignored() -> None:
    assert validate_event(with_(consent(T0, False), consent_channel="e-mail"), CORE, None) == (
        R_INVALID, "unknown consent channel 'e-mail' (known: email, push, sms)")
    p = CustomerProfile("c1", T0, consents={"fax": True})
    assert validate_profile(p, CORE) == (
        R_INVALID, "unknown consent channel 'fax' (known: email, push, sms)")
    custom = dataclasses.replace(CORE, consent_channels="email, fax")
    assert validate_profile(CustomerProfile("c1", T0, consents={"FAX": True}), custom) is None


def test_a_profile_stating_one_channel_twice_differently_is_invalid() -> None:
    p = CustomerProfile("c1", T0, consents={"email": True, "EMAIL": False})
    assert validate_profile(p, CORE) == (R_INVALID, "consent channel 'email' stated twice")
    same = CustomerProfile("c1", T0, consents={"email": True, "EMAIL": True})
    assert validate_profile(same, CORE) is None and same.consents == {"email": True}


def test_a_profile_consent_time_is_not_after_the_snapshot() -> None:
    p = dataclasses.replace(profile(T0), consent_updated_at=T0)
    assert validate_profile(p, CORE) is None
    p.consent_updated_at = T0 + 1
    assert validate_profile(p, CORE) == (
        R_INVALID, f"consent_updated_at {T0 + 1} is after updated_at {T0}")
    p.consent_updated_at = -1
    assert validate_profile(p, CORE) == (
        R_INVALID, "consent_updated_at -1 outside [1970, 2100)")
