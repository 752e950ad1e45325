"""Typed records flowing through the job; their wire form is in avro_schemas/.

All timestamps are UTC epoch milliseconds (Avro timestamp-millis). Records are plain slotted
dataclasses: cheap to build, picklable for engine state, and free of any engine import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from transforms.segments import Segment

# Behaviour event types (the Avro enum EventType).
PRODUCT_VIEW: Final = "product_view"
PAGE_VIEW: Final = "page_view"
ADD_TO_CART: Final = "add_to_cart"
REMOVE_FROM_CART: Final = "remove_from_cart"
PURCHASE: Final = "purchase"
EMAIL_OPEN: Final = "email_open"
EMAIL_CLICK: Final = "email_click"
CONSENT_CHANGE: Final = "consent_change"
CUSTOMER_ERASURE: Final = "customer_erasure"
EVENT_TYPES: Final = (
    PRODUCT_VIEW, PAGE_VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE,
    EMAIL_OPEN, EMAIL_CLICK, CONSENT_CHANGE, CUSTOMER_ERASURE,
)
CART_CHANGES: Final = frozenset({ADD_TO_CART, REMOVE_FROM_CART})

EMAIL_CHANNEL: Final = "email"

# Output kinds of the core's step/wake: adapters route each to its sink.
PAYLOAD: Final = "payload"          # EmailPayload -> output topic
AUDIT: Final = "audit"              # AuditRecord  -> audit topic
DEAD_LETTER: Final = "dead_letter"  # DeadLetter   -> dead-letter topic
FEATURES: Final = "features"        # FeatureSnapshot -> Redis feature store
DROPPED: Final = "dropped"          # str reason (e.g. "duplicate") -> counted only
ERASE: Final = "erase"              # customer_id -> delete the customer's feature-store keys
CONSENT: Final = "consent"          # ConsentState -> the feature store, at once (deliver reads it)
OUTCOME: Final = "outcome"          # Outcome -> outcomes topic (transforms/attribution.py)

# Dead-letter reasons (machine readable).
R_DECODE: Final = "decode_error"            # not Avro / truncated / corrupt
R_SCHEMA: Final = "wrong_schema"            # unknown Confluent schema id or wrong record shape
R_MISSING: Final = "missing_field"          # a required id is empty or absent
R_INVALID: Final = "invalid_value"          # negative price / quantity, bad email, unknown type...
R_FUTURE: Final = "future_timestamp"        # too far ahead of the wall clock at receipt
R_OVERSIZED: Final = "oversized_field"      # a string or map beyond the configured bounds
R_LATE: Final = "late"                      # behind the watermark
R_EMPTY: Final = "empty"                    # no value at all (a Kafka tombstone, 0 bytes)


class Compact:
    """Pickles as its class and its fields in order (rebuilt through __init__): engines
    pickle customer states, which hold events, profiles and products, on every write, and a
    slotted dataclass's own pickle (a state list through a Python __getstate__, then
    __setstate__) takes about twice the time and a third more bytes."""

    __slots__: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        cls = type(self)
        fields = _FIELDS.get(cls)
        if fields is None:
            fields = _FIELDS[cls] = _fields_getter(cls.__slots__)
        return cls, fields(self)


def _fields_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """One C call that reads `names` in order into a tuple (the fields of a Compact pickle):
    engines pickle each pending event on every state write, and a comprehension of getattr
    calls was most of the time of a state's pickle outside the pickler itself."""
    if len(names) == 1:
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    return attrgetter(*names)


# Compact class -> its fields getter, built on its first pickle.
_FIELDS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


@dataclass(slots=True)
class Origin(Compact):
    """Where a raw record came from: a Kafka position, or a file and line (partition = -1)."""

    topic: str
    partition: int = -1
    offset: int = -1


@dataclass(slots=True)
class Product(Compact):
    """The product an event is about."""

    product_id: str
    category: str | None = None
    brand: str | None = None
    price: float | None = None


@dataclass(slots=True)
class BehaviourEvent(Compact):
    """One behavioural event of a customer (Avro `BehaviourEvent`, nested records flattened)."""

    event_id: str
    customer_id: str
    event_type: str
    occurred_at: int
    session_id: str | None = None
    product: Product | None = None
    quantity: int | None = None
    order_id: str | None = None
    order_total: float | None = None
    email_message_id: str | None = None
    email_campaign: str | None = None
    consent_channel: str | None = None
    consent_granted: bool | None = None
    properties: dict[str, str] | None = None
    # Runtime only, not on the wire: where the decoder found it (for dead letters).
    origin: Origin | None = None


@dataclass(slots=True)
class CustomerProfile(Compact):
    """A CRM profile update (Avro `CustomerProfile`); the newest `updated_at` wins."""

    customer_id: str
    updated_at: int
    email: str | None = None
    first_name: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    consents: dict[str, bool] = field(default_factory=dict)
    lifecycle_stage: str | None = None
    origin: Origin | None = None
    # When the CRM last changed `consents`; None: unknown (see transforms/state.py set_consent).
    # Last, so pickles of profiles made before it (engine state) still load.
    consent_updated_at: int | None = None


@dataclass(slots=True)
class Recommendation:
    """One recommended product with its score and the catalog data used to render it."""

    product_id: str
    score: float
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    url: str | None = None
    image_url: str | None = None


@dataclass(slots=True)
class FiredTrigger:
    """A trigger that fired: what, which instance (`key`), when, and why (`evidence`)."""

    type: str
    key: str
    fired_at: int
    evidence: list[str]
    source_event_ids: list[str] = field(default_factory=list)
    category: str | None = None
    # Runtime only, not on the wire: what the templates may show beyond the products (price
    # drop: {"product": Product, "old_price", "new_price"}; transforms/triggers/signal_base.py).
    details: dict[str, Any] | None = None


@dataclass(slots=True)
class EmailPayload:
    """A ready-to-send personalized email (Avro `PersonalizedEmail`)."""

    message_id: str
    customer_id: str
    recipient_email: str
    recipient_name: str | None
    locale: str | None
    time_zone: str
    trigger: FiredTrigger
    campaign: str
    variant: str
    subject: str
    preheader: str
    html: str
    text: str
    fallback: bool
    fallback_reason: str | None
    recommendations: list[Recommendation]
    engagement_score: float
    send_after: int | None
    expires_at: int
    source_event_ids: list[str]
    segment: Segment | None = None  # the customer's segment at fired_at (transforms/segments.py)


@dataclass(slots=True)
class PayloadRequest:
    """An emitted trigger as the keyed rules leave it, for the stateless compose stage
    (transforms/compose.py): all that depends on the customer's state at the fire time."""

    message_id: str
    customer_id: str
    profile: CustomerProfile
    trigger: FiredTrigger
    engagement_score: float
    seeds: list[str]                # products to recommend from, most relevant first
    categories: list[str]           # cold-start categories, most relevant first
    exclude: list[str]              # never recommend: cart, recently bought, evidence (sorted)
    known: dict[str, Product]       # products the customer's own events described
    time_zone: str
    send_after: int | None
    expires_at: int
    # The subject variant the message goes out with, chosen by the arms stage
    # (transforms/bandit.py); None: the compose stage picks it (render.choose_variant).
    variant: str | None = None
    segment: Segment | None = None  # at the fire time; reaches templates only via the context


@dataclass(slots=True)
class Outcome:
    """An email event or purchase attributed to a message (Avro `Outcome`, DESIGN.md section
    9): kind open, click or purchase; value the purchase's revenue (0 for opens and clicks);
    holdout: the message was a control-group customer's would-be message (variant None)."""

    message_id: str
    customer_id: str
    trigger_type: str
    variant: str | None
    kind: str
    value: float
    occurred_at: int
    fired_at: int
    holdout: bool
    event_id: str


@dataclass(slots=True)
class AuditRecord:
    """The policy decision on one fired trigger (`emitted` or `suppressed:<reason>`), or a
    consent change (type consent_change, `consent:<granted|revoked|superseded>`, key the
    event id or "profile", fired_at the consent time) or an erasure (`erased`)."""

    customer_id: str
    type: str
    key: str
    fired_at: int
    decision: str
    message_id: str | None = None


@dataclass(slots=True)
class ConsentState:
    """A customer's email consent as the job now holds it, for the feature store."""

    customer_id: str
    granted: bool
    as_of: int


@dataclass(slots=True)
class DeadLetter:
    """Input that could not be used (Avro `DeadLetter`): `raw` is at most a prefix of the bytes
    (transforms/sizes.py), `raw_length` and `raw_sha256` describe them whole (None: unknown)."""

    raw: bytes
    origin: Origin
    reason: str
    error: str
    received_at: int
    raw_length: int | None = None
    raw_sha256: str | None = None


@dataclass(slots=True)
class FeatureSnapshot:
    """A customer's windowed features, score and last trigger, for the Redis feature store."""

    customer_id: str
    as_of: int
    features: dict[str, Any]
    engagement_score: float
    last_trigger: str | None


Item = BehaviourEvent | CustomerProfile
Output = tuple[str, Any]


def event_time(item: Item) -> int:
    """The event time of an input item: occurred_at for events, updated_at for profiles."""
    return item.occurred_at if isinstance(item, BehaviourEvent) else item.updated_at
