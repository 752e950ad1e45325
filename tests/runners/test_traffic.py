from __future__ import annotations

import collections
from pathlib import Path

import pytest

from runners.generate import write_file
from runners.progress import Progress
from runners.traffic import (
    DEFAULT_START,
    EVENTS,
    GARBAGE,
    NEGATIVE_PRICE,
    PROFILES,
    TRUNCATED,
    Malformed,
    Traffic,
    TrafficConfig,
    avro_record,
    build_catalog,
    jsonl_line,
    rees46_line,
)
from transforms.codec import decode_event, decode_profile
from transforms.model import (
    ADD_TO_CART,
    CONSENT_CHANGE,
    EMAIL_CLICK,
    EMAIL_OPEN,
    PRODUCT_VIEW,
    PURCHASE,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    Origin,
)
from transforms.readers import read_events_jsonl, read_rees46
from transforms.settings import MINUTE, CoreSettings
from transforms.validate import validate_event, validate_profile

CORE = CoreSettings()
ORIGIN = Origin("test")


def run(**knobs: object) -> tuple[list[object], dict[str, int]]:
    # A low rate keeps the warm-up (15 min of event time before `start`) cheap.
    cfg = {"events": 3000, "customers": 300, "rate": 5.0, **knobs}
    traffic = Traffic(TrafficConfig(**cfg))  # type: ignore[arg-type]
    return list(traffic), traffic.counts


@pytest.fixture(scope="module")
def clean() -> list[object]:
    return run(seed=7)[0]


def events_of(items: list[object]) -> list[BehaviourEvent]:
    return [i for i in items if isinstance(i, BehaviourEvent)]


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    knobs = {"events": 500, "duplicate_ratio": 0.1, "out_of_order_ms": 3000, "malformed_ratio": 0.1}
    a, b, c = run(seed=1, **knobs)[0], run(seed=1, **knobs)[0], run(seed=2, **knobs)[0]
    assert [jsonl_line(i) for i in a] == [jsonl_line(i) for i in b]  # type: ignore[arg-type]
    assert [jsonl_line(i) for i in a] != [jsonl_line(i) for i in c]  # type: ignore[arg-type]


def test_counts_and_event_time_order_without_knobs(clean: list[object]) -> None:
    events = events_of(clean)
    assert len(events) == 3000
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
    assert events[0].occurred_at >= DEFAULT_START
    assert len({e.event_id for e in events}) == 3000


def test_every_generated_record_is_valid(clean: list[object]) -> None:
    for item in clean:
        if isinstance(item, BehaviourEvent):
            assert validate_event(item, CORE, None) is None, item
        else:
            assert isinstance(item, CustomerProfile)
            assert validate_profile(item, CORE) is None, item


def test_profiles_precede_their_customers_events_and_include_hostile_names(
    clean: list[object],
) -> None:
    seen: set[str] = set()
    for item in clean:
        if isinstance(item, CustomerProfile):
            seen.add(item.customer_id)
        else:
            assert item.customer_id in seen  # type: ignore[attr-defined]
    names = {i.first_name for i in clean if isinstance(i, CustomerProfile)}
    assert any(n and "<script>" in n for n in names)
    zones = {i.time_zone for i in clean if isinstance(i, CustomerProfile)}
    assert len(zones) > 5


def test_the_journeys_are_there(clean: list[object]) -> None:
    events = events_of(clean)
    by_customer: dict[str, list[BehaviourEvent]] = collections.defaultdict(list)
    for e in events:
        by_customer[e.customer_id].append(e)
    types = collections.Counter(e.event_type for e in events)
    assert types[PRODUCT_VIEW] > types[ADD_TO_CART] > types[PURCHASE] > 0
    assert types[EMAIL_OPEN] > types[EMAIL_CLICK] > 0
    assert any(e.event_type == CONSENT_CHANGE and e.consent_granted is False for e in events)

    def intense(evs: list[BehaviourEvent]) -> bool:
        views = [e for e in evs if e.event_type == PRODUCT_VIEW]
        return any(
            sum(1 for w in views if w.product.category == v.product.category  # type: ignore[union-attr]
                and 0 <= w.occurred_at - v.occurred_at <= 30 * MINUTE) >= 5
            for v in views
        )

    def abandoned(evs: list[BehaviourEvent]) -> bool:
        return any(e.event_type == ADD_TO_CART for e in evs) and not any(
            e.event_type == PURCHASE for e in evs)

    def bought(evs: list[BehaviourEvent]) -> bool:
        return any(e.event_type == PURCHASE and e.order_id and e.order_total for e in evs)

    assert sum(map(intense, by_customer.values())) > 10
    assert sum(map(abandoned, by_customer.values())) > 10
    assert sum(map(bought, by_customer.values())) > 10


def test_the_rate_spaces_event_time() -> None:
    events = events_of(run(events=4000, customers=2000, rate=4.0, seed=3)[0])
    span_s = (events[-1].occurred_at - events[0].occurred_at) / 1000
    assert 4000 / span_s == pytest.approx(4.0, rel=0.1)


def test_duplicates_repeat_events_and_the_shuffle_is_bounded() -> None:
    items, counts = run(seed=5, duplicate_ratio=0.1, out_of_order_ms=4000)
    events = events_of(items)
    assert counts["events"] == 3000
    assert len(events) == 3000 + counts["duplicates"]
    assert 200 < counts["duplicates"] < 400
    by_id = collections.defaultdict(list)
    for e in events:
        by_id[e.event_id].append(e)
    assert all(copies[0] == copies[-1] for copies in by_id.values())
    latest = lateness = 0
    for e in events:
        lateness = max(lateness, latest - e.occurred_at)
        latest = max(latest, e.occurred_at)
    assert 0 < lateness <= 4000


@pytest.fixture(scope="module")
def malformed() -> list[object]:
    items, counts = run(seed=9, malformed_ratio=0.2)
    bad = [i for i in items if isinstance(i, Malformed)]
    assert counts["malformed"] == len(bad) and counts["events"] + len(bad) == 3000
    assert {m.flavour for m in bad} == {GARBAGE, TRUNCATED, NEGATIVE_PRICE}
    return items


def test_malformed_avro_is_dead_lettered_and_the_rest_decodes(malformed: list[object]) -> None:
    for item in malformed:
        for confluent in (False, True):
            kind, key, value = avro_record(item, confluent)  # type: ignore[arg-type]
            if kind == PROFILES:
                assert isinstance(decode_profile(value, ORIGIN, CORE, 0), CustomerProfile)
                continue
            assert kind == EVENTS and key
            result = decode_event(value, ORIGIN, None, CORE, 0)
            assert isinstance(result, DeadLetter) == isinstance(item, Malformed), item


def test_malformed_lines_are_dead_lettered_by_the_file_readers(
    malformed: list[object], tmp_path: Path
) -> None:
    bad = sum(isinstance(i, Malformed) for i in malformed)
    jsonl = tmp_path / "e.jsonl"
    write_file(malformed, "jsonl", jsonl, Progress("test"))  # type: ignore[arg-type]
    read = list(read_events_jsonl(jsonl))
    assert sum(isinstance(i, DeadLetter) for i in read) == bad
    assert len(read) == len(malformed)

    csv = tmp_path / "e.csv"
    counts = write_file(malformed, "rees46", csv, Progress("test"))  # type: ignore[arg-type]
    read = list(read_rees46(csv, synthesize_profiles=False))
    assert len(read) == counts["written"]
    rees_bad = sum(1 for i in malformed if isinstance(i, Malformed) and rees46_line(i) is not None)
    assert sum(isinstance(i, DeadLetter) for i in read) == rees_bad


def test_rees46_output_replays_to_the_same_events(clean: list[object], tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    counts = write_file(clean, "rees46", path, Progress("test"))  # type: ignore[arg-type]
    expected = [e for e in events_of(clean) if rees46_line(e) is not None]
    assert counts == {"written": len(expected), "skipped": len(clean) - len(expected)}
    replayed = list(read_rees46(path, synthesize_profiles=False))
    assert len(replayed) == len(expected)
    for got, want in zip(replayed, expected, strict=True):
        assert isinstance(got, BehaviourEvent)
        assert (got.customer_id, got.event_type, got.product, got.session_id) == (
            want.customer_id, want.event_type, want.product, want.session_id)
        assert got.occurred_at == want.occurred_at // 1000 * 1000


def test_catalog_is_fixed_and_priced() -> None:
    a, b = build_catalog(), build_catalog()
    assert a == b and len(a) == 480
    assert all(p.price > 0 and p.category for p in a)
    assert len({p.product_id for p in a}) == 480
