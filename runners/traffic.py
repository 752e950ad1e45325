"""Synthetic but realistic traffic for tests, demos and benchmarks, deterministic from a seed.

    Traffic(TrafficConfig) -> iterable of BehaviourEvent | CustomerProfile | Malformed (arrival
    order), with `.counts` of events (valid), duplicates, malformed and profiles

Customers have a time zone, a locale, a (sometimes hostile) first name, an email consent and one
to three favourite categories of a fixed synthetic catalog. Sessions arrive as a Poisson
process at the configured event rate; each is one journey:

    browse          1-4 product views (favourite categories), some page views
    browse_intense  5-9 product views in one category, 15 s - 3 min apart (browse intensity)
    cart_purchase   views, 1-3 add_to_cart, sometimes a remove, often the complement of the
                    first item (runners/journeys.py: co-purchase pairs), then a purchase line
                    per item (post-purchase cross-sell; win-back once the customer falls silent,
                    at the latest when the input ends)
    cart_leave      views, 1-2 add_to_cart (sometimes a remove), then nothing (cart abandonment)
    email           an open of an earlier message, often a click, then mostly a landing view
                    (a click without one: engagement follow-up)
    sign_up         a sign-up page view, mostly with an email consent grant (welcome)
    consent         an unsubscribe (or a re-subscribe) of the email channel
    profile         a CRM update: new email, name, time zone or locale

A customer's first session is preceded by their profile (stamped at the session's start).
Sessions start with a customer who is not in one, unless a few random picks all are: with too
few customers for the rate, a customer's sessions overlap (the rate is kept).

Knobs: `duplicate_ratio` re-sends a valid event (same event_id); `out_of_order_ms` delays each
item by up to that much, so arrival order differs from event-time order by at most that bound
(duplicates arrive within it too); `malformed_ratio` turns events into Malformed records (raw
garbage, truncated encodings, negative prices) that the job must dead-letter. `events` (the
knob) counts behaviour events, malformed ones included, duplicates and profiles not.

Renderers turn items into what each sink takes: `avro_record` (Kafka key and value),
`jsonl_line` (events JSONL), `rees46_line` (the rees46 CSV replayed by transforms/readers.py).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from runners.journeys import (
    COMPLEMENT_RATIO,
    LANDING_RATIO,
    SIGN_UP,
    SIGN_UP_CONSENT_RATIO,
    complement,
)
from transforms.codec import (
    SCHEMA_ID_OF,
    confluent_frame,
    decode_event,
    encode_event,
    encode_profile,
)
from transforms.jsonl import dumps, item_to_json
from transforms.model import (
    ADD_TO_CART,
    CONSENT_CHANGE,
    EMAIL_CHANNEL,
    EMAIL_CLICK,
    EMAIL_OPEN,
    PAGE_VIEW,
    PRODUCT_VIEW,
    PURCHASE,
    REMOVE_FROM_CART,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    Origin,
    Product,
    event_time,
)
from transforms.readers import REES46_TYPES
from transforms.settings import MINUTE, SECOND, CoreSettings

# Default event-time anchor: Monday 2026-01-05 08:00 UTC.
DEFAULT_START = 1_767_600_000_000

GARBAGE = "garbage"
TRUNCATED = "truncated"
NEGATIVE_PRICE = "negative_price"

# Journeys and their weights.
_JOURNEY_NAMES = (
    "browse", "browse_intense", "cart_purchase", "cart_leave", "email", "consent", "profile",
    "sign_up",
)
_JOURNEY_WEIGHTS = (30, 12, 15, 15, 15, 4, 9, 3)
_MEAN_EVENTS_PER_SESSION = 4.2  # of the mix above, measured; paces session arrivals
_PICK_TRIES = 8
WARMUP = 15 * MINUTE  # longer than 95% of journeys (the longest take about 20 min)

# (category_code, category_id, brands, price range). Like rees46, some categories have no code.
_CATEGORIES = (
    ("electronics.smartphone", "2053013555631882655",
     ("apple", "samsung", "xiaomi", "huawei"), (99, 1299)),
    ("electronics.audio.headphone", "2053013554658804075",
     ("sony", "jbl", "apple", "sennheiser"), (15, 399)),
    ("computers.notebook", "2053013558920217191",
     ("lenovo", "hp", "asus", "acer"), (299, 2499)),
    ("appliances.kitchen.refrigerators", "2053013565983425517",
     ("lg", "bosch", "samsung"), (249, 1899)),
    ("appliances.environment.vacuum", "2053013561579406073",
     ("dyson", "philips", "samsung"), (59, 699)),
    ("furniture.living_room.sofa", "2053013559792632471",
     ("ikea", "divan"), (199, 1499)),
    ("apparel.shoes", "2053013566209917945",
     ("nike", "adidas", "puma", "ecco"), (29, 219)),
    ("kids.toys", "2053013560144953983",
     ("lego", "hasbro", "mattel"), (9, 149)),
    ("sport.bicycle", "2053013554092573021",
     ("trek", "giant", "cube"), (249, 2999)),
    ("", "2103807459595387724",
     ("shiseido", "estel", "lancome"), (5, 129)),
    ("", "2053013563835941749",
     ("", "tefal", "moulinex"), (12, 249)),
    ("", "2090971686529663114",
     ("", "canon", "nikon"), (89, 1999)),
)
_PRODUCTS_PER_CATEGORY = 40
_CATALOG_SEED = 46  # the catalog is fixed, whatever the traffic seed

_TIME_ZONES = (
    "Europe/London", "Europe/Paris", "Europe/Berlin", "Europe/Madrid", "America/New_York",
    "America/Chicago", "America/Los_Angeles", "America/Sao_Paulo", "America/St_Johns",
    "Asia/Tokyo", "Asia/Kolkata", "Asia/Singapore", "Australia/Sydney", "Pacific/Auckland",
    "Africa/Lagos", "UTC",
)
_LOCALES = (
    "en-GB", "en-US", "fr-FR", "de-DE", "es-ES", "pt-BR", "ja-JP", "hi-IN", "en-AU", "nl-NL",
)
_FIRST_NAMES = (
    "Alice", "Bob", "Chloé", "Dmitri", "Eun-ji", "Fatima", "Giovanni", "Hannah", "Ivan", "Jürgen",
    "Kwame", "Léa", "Mohammed", "Noor", "Olga", "Pedro", "Quynh", "Rosa", "Søren", "Tanvi", "Zoë",
    "O'Brien", "李", "José", "",
)
# Customer-supplied text that rendering must neither execute nor pass through as markup.
_HOSTILE_NAMES = (
    "{{ 7*7 }}<script>alert(1)</script>",
    "<img src=x onerror=alert(document.cookie)>",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "Robert'); DROP TABLE customers;--",
    "\u202eevil\u202c name",
)
_LIFECYCLE = ("lead", "customer", "customer", "customer", "churned")
_CAMPAIGNS = ("weekly-digest", "new-arrivals", "cart_abandonment", "browse_intensity")


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    """One product of the synthetic catalog; `category` is what events carry (code, else id)."""

    product_id: str
    category: str
    category_code: str
    category_id: str
    brand: str
    price: float


def build_catalog() -> list[CatalogProduct]:
    """The fixed synthetic catalog: 40 products in each of 12 categories."""
    rng = random.Random(_CATALOG_SEED)
    products = []
    for c, (code, cat_id, brands, (low, high)) in enumerate(_CATEGORIES):
        for i in range(_PRODUCTS_PER_CATEGORY):
            products.append(CatalogProduct(
                product_id=str(1_000_000 + c * 10_000 + i),
                category=code or cat_id,
                category_code=code,
                category_id=cat_id,
                brand=rng.choice(brands),
                price=round(rng.uniform(low, high), 2),
            ))
    return products


@dataclass(slots=True)
class TrafficConfig:
    """The knobs of `personalize generate` (event times in epoch ms)."""

    events: int = 10_000
    customers: int = 1_000
    rate: float = 50.0              # events per second of event time
    start: int = DEFAULT_START
    seed: int = 0
    duplicate_ratio: float = 0.0
    out_of_order_ms: int = 0
    malformed_ratio: float = 0.0


@dataclass(slots=True)
class Malformed:
    """A record the job must dead-letter, made from `event` (already negated for negative_price).

    `noise` makes garbage bytes or text; `cut` (0..1) is where a truncated encoding ends.
    """

    flavour: str
    event: BehaviourEvent
    noise: bytes = b""
    cut: float = 0.5

    @property
    def customer_id(self) -> str:
        """The key it is sent under."""
        return self.event.customer_id


Generated = BehaviourEvent | CustomerProfile | Malformed


@dataclass(slots=True)
class _Customer:
    customer_id: str
    favourites: list[int]           # category indexes
    subscribed: bool
    profile: CustomerProfile | None = None
    busy_until: int = 0
    messages: list[str] = field(default_factory=list)


class Traffic:
    """One generation run: iterate it for the items in arrival order; `counts` says what came
    out so far (events, duplicates, malformed, profiles)."""

    def __init__(self, cfg: TrafficConfig) -> None:
        if cfg.events < 0 or cfg.customers < 1 or cfg.rate <= 0:
            raise ValueError("events >= 0, customers >= 1 and rate > 0 are required")
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.catalog = build_catalog()
        self.by_category = [
            self.catalog[i * _PRODUCTS_PER_CATEGORY:(i + 1) * _PRODUCTS_PER_CATEGORY]
            for i in range(len(_CATEGORIES))
        ]
        self.customers: dict[int, _Customer] = {}
        self.core = CoreSettings()
        self.seq = 0
        self.counts = {"events": 0, "duplicates": 0, "malformed": 0, "profiles": 0}

    # -- identities ------------------------------------------------------------------------------

    def _id(self) -> str:
        """A random 128-bit id in hex (event, session, message ids)."""
        return f"{self.rng.getrandbits(128):032x}"

    def _customer(self, n: int) -> _Customer:
        c = self.customers.get(n)
        if c is None:
            rng = self.rng
            favourites = rng.sample(range(len(_CATEGORIES)), rng.randint(1, 3))
            c = _Customer(str(500_000_000 + n), favourites, rng.random() < 0.9)
            self.customers[n] = c
        return c

    def _profile(self, c: _Customer, at: int) -> CustomerProfile:
        rng = self.rng
        old = c.profile
        name = rng.choice(_HOSTILE_NAMES) if rng.random() < 0.05 else rng.choice(_FIRST_NAMES)
        email: str | None
        if old is None or rng.random() < 0.3:
            handle = (name if name.isascii() and name.isalpha() else "customer").lower()
            email = f"{handle}.{c.customer_id}{rng.choice(('', '+shop', '.x'))}@example.com"
        else:
            email = old.email
        p = CustomerProfile(
            customer_id=c.customer_id,
            updated_at=at,
            email=email,
            first_name=name or None,
            locale=rng.choice(_LOCALES),
            time_zone=rng.choice(_TIME_ZONES),
            consents={EMAIL_CHANNEL: c.subscribed},
            lifecycle_stage=rng.choice(_LIFECYCLE),
        )
        c.profile = p
        return p

    # -- journeys: lists of (time, item) ---------------------------------------------------------

    def _product(self, c: _Customer, category: int | None = None) -> CatalogProduct:
        rng = self.rng
        if category is None:
            anywhere = rng.random() < 0.2
            category = rng.randrange(len(_CATEGORIES)) if anywhere else rng.choice(c.favourites)
        # Popular products first: a skewed pick makes co-occurrence (and recommendations) real.
        products = self.by_category[category]
        return products[min(int(rng.expovariate(1 / 8)), len(products) - 1)]

    def _session(
        self, c: _Customer, t: int, since: int
    ) -> tuple[list[BehaviourEvent | CustomerProfile], int]:
        """One journey of `c` from `t`: its items at or after `since`, and its end time.

        Events before `since` (the warm-up) are timed but not built: that is most of the cost.
        """
        rng = self.rng
        journey = rng.choices(_JOURNEY_NAMES, _JOURNEY_WEIGHTS)[0]
        session = self._id()
        out: list[BehaviourEvent | CustomerProfile] = []

        def gap(low: int = 5, high: int = 120) -> int:
            return rng.randint(low * SECOND, high * SECOND) + rng.randrange(SECOND)

        def emit(etype: str, after: int, **fields: Any) -> None:
            nonlocal t
            t += after
            if t >= since:
                out.append(BehaviourEvent(self._id(), c.customer_id, etype, t, session, **fields))

        def view(p: CatalogProduct) -> None:
            emit(PRODUCT_VIEW, gap(), product=_ref(p))

        if journey == "browse":
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.25:
                    emit(PAGE_VIEW, gap(), properties={"page": "/"})
                view(self._product(c))
        elif journey == "browse_intense":
            category = rng.choice(c.favourites)
            for _ in range(rng.randint(5, 9)):
                emit(PRODUCT_VIEW, gap(15, 180), product=_ref(self._product(c, category)))
        elif journey in ("cart_purchase", "cart_leave"):
            carted: list[CatalogProduct] = []
            for _ in range(rng.randint(1, 4)):
                view(self._product(c))
            for _ in range(rng.randint(1, 3 if journey == "cart_purchase" else 2)):
                p = self._product(c)
                view(p)
                emit(ADD_TO_CART, gap(), product=_ref(p), quantity=1)
                carted.append(p)
            if len(carted) > 1 and rng.random() < 0.3:
                removed = carted.pop(rng.randrange(len(carted)))
                emit(REMOVE_FROM_CART, gap(), product=_ref(removed), quantity=1)
            if journey == "cart_purchase" and rng.random() < COMPLEMENT_RATIO:
                p = complement(self.catalog, carted[0], _PRODUCTS_PER_CATEGORY)
                view(p)
                emit(ADD_TO_CART, gap(), product=_ref(p), quantity=1)
                carted.append(p)
            if journey == "cart_purchase":
                order = f"order-{self._id()[:16]}"
                total = round(sum(p.price for p in carted), 2)
                after = gap(30, 300)
                for p in carted:  # one line per product of the order, as rees46 has
                    emit(PURCHASE, after, product=_ref(p), quantity=1, order_id=order,
                         order_total=total)
                    after = rng.randrange(1, 50)
        elif journey == "email":
            if not c.messages or rng.random() < 0.3:
                c.messages.append(f"msg-{self._id()}")
            message = rng.choice(c.messages)
            campaign = rng.choice(_CAMPAIGNS)
            emit(EMAIL_OPEN, gap(1, 30), email_message_id=message, email_campaign=campaign)
            if rng.random() < 0.5:
                emit(EMAIL_CLICK, gap(2, 60), email_message_id=message, email_campaign=campaign)
                if rng.random() < LANDING_RATIO:
                    view(self._product(c))
        elif journey == "consent":
            if rng.random() < 0.8:
                c.subscribed = not c.subscribed
            emit(CONSENT_CHANGE, gap(1, 30), consent_channel=EMAIL_CHANNEL,
                 consent_granted=c.subscribed)
        elif journey == "sign_up":
            emit(PAGE_VIEW, gap(1, 30), properties=SIGN_UP)
            if rng.random() < SIGN_UP_CONSENT_RATIO:
                c.subscribed = True
                emit(CONSENT_CHANGE, gap(1, 30), consent_channel=EMAIL_CHANNEL,
                     consent_granted=True)
        else:  # a CRM profile update
            t += gap(1, 30)
            if t >= since:
                out.append(self._profile(c, t))
        return out, t

    # -- malformed records -----------------------------------------------------------------------

    def _malformed(self, ev: BehaviourEvent) -> Malformed:
        rng = self.rng
        flavour = rng.choice((GARBAGE, TRUNCATED, NEGATIVE_PRICE))
        if flavour == NEGATIVE_PRICE and ev.product is not None and ev.product.price:
            product = replace(ev.product, price=-ev.product.price)
            return Malformed(NEGATIVE_PRICE, replace(ev, product=product))
        if flavour == GARBAGE:
            origin = Origin("generate")
            while True:  # garbage that happens to decode would not be malformed
                noise = rng.randbytes(rng.randint(1, 60))
                if isinstance(decode_event(noise, origin, None, self.core, 0), DeadLetter):
                    return Malformed(GARBAGE, ev, noise=noise)
        return Malformed(TRUNCATED, ev, cut=rng.random())

    # -- the stream ------------------------------------------------------------------------------

    def _in_time_order(self) -> Iterator[tuple[int, Generated]]:
        """(event time, item) in event-time order, `cfg.events` events from `cfg.start` on.

        Sessions start WARMUP (less for a short stream) before `start` so the traffic is already
        at its steady rate then (what happens before `start` is dropped; a customer's first
        profile is stamped no earlier than `start`); the last sessions are cut where the event
        count is reached, as real data that starts and stops mid-stream.
        Sessions are merged through a heap: once a session starting at t is made, nothing
        earlier than t can come, so everything in the heap up to t is released.
        """
        cfg, rng = self.cfg, self.rng
        pending: list[tuple[int, int, BehaviourEvent | CustomerProfile]] = []
        # A short, dense stream (many events/s for seconds) needs less warm-up to reach its
        # steady rate at `start` than the making of 15 minutes of discarded sessions costs.
        span = cfg.events * 1000.0 / cfg.rate
        t = float(cfg.start - min(WARMUP, max(MINUTE, 4 * span)))
        left = cfg.events
        while left > 0:
            start = int(t)
            while left > 0 and pending and pending[0][0] <= start:
                at, _, item = heapq.heappop(pending)
                if isinstance(item, CustomerProfile):
                    yield at, item
                elif at >= cfg.start:
                    left -= 1
                    yield at, self._malformed(item) if rng.random() < cfg.malformed_ratio else item
            c = self._pick_customer(start)
            session, c.busy_until = self._session(c, start, cfg.start)
            if session and c.profile is None:  # first seen: the CRM knew them by then
                known = max(start, cfg.start)
                self._push(pending, known, self._profile(c, known))
            for item in session:
                self._push(pending, event_time(item), item)
            t += rng.expovariate(1.0) * _MEAN_EVENTS_PER_SESSION * 1000.0 / cfg.rate

    def _pick_customer(self, at: int) -> _Customer:
        """A random customer, preferring one not in a session at `at` (a few tries)."""
        for _ in range(_PICK_TRIES):
            c = self._customer(self.rng.randrange(self.cfg.customers))
            if c.busy_until <= at:
                break
        return c

    def _push(self, heap: list[tuple[int, int, Any]], at: int, item: Generated) -> None:
        self.seq += 1
        heapq.heappush(heap, (at, self.seq, item))

    def __iter__(self) -> Iterator[Generated]:
        """Every item in arrival order: duplicates added, then a shuffle bounded by the knob."""
        cfg, rng, counts = self.cfg, self.rng, self.counts
        bound = cfg.out_of_order_ms
        delayed: list[tuple[int, int, Generated]] = []
        for at, item in self._in_time_order():
            copies = [item]
            if isinstance(item, BehaviourEvent):
                counts["events"] += 1
                if rng.random() < cfg.duplicate_ratio:
                    counts["duplicates"] += 1
                    copies.append(replace(item))
            else:
                counts["malformed" if isinstance(item, Malformed) else "profiles"] += 1
            for copy in copies:
                if bound <= 0:
                    yield copy
                else:
                    self._push(delayed, at + rng.randint(0, bound), copy)
            while delayed and delayed[0][0] <= at:
                yield heapq.heappop(delayed)[2]
        while delayed:
            yield heapq.heappop(delayed)[2]


def _ref(p: CatalogProduct) -> Product:
    return Product(p.product_id, p.category, p.brand or None, p.price)


# -- renderers -------------------------------------------------------------------------------------

EVENTS = "events"
PROFILES = "profiles"


def avro_record(item: Generated, confluent: bool = False) -> tuple[str, str, bytes]:
    """(events | profiles, key, Avro value) as sent to Kafka; malformed ones go to events."""
    if isinstance(item, CustomerProfile):
        body = encode_profile(item)
        return PROFILES, item.customer_id, _frame(body, "customer_profile", confluent)
    if isinstance(item, BehaviourEvent):
        return EVENTS, item.customer_id, _frame(encode_event(item), "behaviour_event", confluent)
    if item.flavour == GARBAGE:
        return EVENTS, item.customer_id, item.noise
    encoded = _frame(encode_event(item.event), "behaviour_event", confluent)
    if item.flavour == TRUNCATED:
        encoded = encoded[:_cut(len(encoded), item.cut)]
    return EVENTS, item.customer_id, encoded


def _frame(body: bytes, schema: str, confluent: bool) -> bytes:
    return confluent_frame(SCHEMA_ID_OF[schema], body) if confluent else body


def _cut(size: int, fraction: float) -> int:
    """A strict, non-empty prefix length of a `size`-long encoding."""
    return 1 + int(fraction * (size - 1)) if size > 1 else 0


def jsonl_line(item: Generated) -> str:
    """One line of an events JSONL file (no newline); malformed ones do not parse or validate."""
    if not isinstance(item, Malformed):
        return dumps(item_to_json(item))
    if item.flavour == GARBAGE:
        return "{" + item.noise.hex()
    line = dumps(item_to_json(item.event))
    return line if item.flavour == NEGATIVE_PRICE else line[:_cut(len(line), item.cut)]


_REES46_TYPES = {event_type: name for name, event_type in REES46_TYPES.items()}
_CATEGORY_IDS = {code or cat_id: (code, cat_id) for code, cat_id, _, _ in _CATEGORIES}


def rees46_line(item: Generated) -> str | None:
    """One rees46 CSV row (no newline), or None for what rees46 cannot hold (profiles, emails,
    consents, page views). Malformed rows fail to parse or validate in transforms/readers.py."""
    if isinstance(item, CustomerProfile):
        return None
    if isinstance(item, Malformed):
        if item.flavour == GARBAGE:
            return item.noise.hex()
        line = rees46_line(item.event)
        if line is None or item.flavour == NEGATIVE_PRICE:
            return line
        last_comma = line.rindex(",")  # cut before the last column: too few columns
        return line[:_cut(last_comma + 1, item.cut)]
    etype = _REES46_TYPES.get(item.event_type)
    p = item.product
    if etype is None or p is None:
        return None
    code, cat_id = _CATEGORY_IDS.get(p.category or "", ("", p.category or ""))
    when = datetime.fromtimestamp(item.occurred_at // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    price = "" if p.price is None else f"{p.price:.2f}"
    return ",".join((when, etype, p.product_id, cat_id, code, p.brand or "", price,
                     item.customer_id, item.session_id or ""))
