from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import T0, consent, profile, view
from transforms.jsonl import dumps, event_to_json, item_to_json
from transforms.model import (
    R_DECODE,
    R_INVALID,
    R_MISSING,
    R_OVERSIZED,
    BehaviourEvent,
    CustomerProfile,
    DeadLetter,
    Origin,
)
from transforms.readers import (
    REES46_COLUMNS,
    read_events_jsonl,
    read_rees46,
    with_synthesized_profiles,
)
from transforms.settings import CoreSettings

HEADER = ",".join(REES46_COLUMNS)
GOOD = "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1"


def write(tmp_path: Path, name: str, lines: list[str], raw_tail: bytes = b"") -> Path:
    path = tmp_path / name
    path.write_bytes(("\n".join(lines) + "\n").encode() + raw_tail)
    return path


def test_rees46_rows_are_validated_and_bad_rows_become_dead_letters(tmp_path: Path) -> None:
    negative = GOOD.replace("35.79", "-35.79")
    nan = GOOD.replace("35.79", "nan")
    long_brand = GOOD.replace("shiseido", "b" * 41)
    path = write(tmp_path, "r.csv", [HEADER, GOOD, negative, nan, long_brand, "garbage"],
                 raw_tail=b"2019-10-01 00:00:00 UTC,view,1,2,,\xff,1.00,9,s\n")
    items = list(read_rees46(path, synthesize_profiles=False,
                             core=CoreSettings(max_string_length=40)))
    ev = items[0]
    assert isinstance(ev, BehaviourEvent)
    assert ev.event_id == hashlib.sha1(GOOD.encode()).hexdigest()
    assert ev.origin == Origin(str(path), -1, 2)
    dead = items[1:]
    assert all(isinstance(d, DeadLetter) for d in dead)
    assert [(d.origin.offset, d.reason) for d in dead] == [  # type: ignore[union-attr]
        (3, R_INVALID), (4, R_INVALID), (5, R_OVERSIZED), (6, R_DECODE), (7, R_DECODE),
    ]
    assert dead[0].raw == negative.encode()  # type: ignore[union-attr]
    assert dead[-1].raw == b"2019-10-01 00:00:00 UTC,view,1,2,,\xff,1.00,9,s"  # type: ignore[union-attr]


def test_rees46_profiles_are_synthesized_only_for_valid_events(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", [HEADER, GOOD.replace("35.79", "-1"), GOOD, GOOD])
    kinds = [type(i).__name__ for i in read_rees46(path)]
    assert kinds == ["DeadLetter", "CustomerProfile", "BehaviourEvent", "BehaviourEvent"]


def test_events_jsonl_reads_events_profiles_and_bare_events(tmp_path: Path) -> None:
    ev, p = view(T0), profile(T0)
    path = write(tmp_path, "e.jsonl", [
        dumps(item_to_json(p)), dumps(item_to_json(ev)), "", dumps(event_to_json(ev)),
    ])
    items = list(read_events_jsonl(path))
    assert items == [
        dataclasses.replace(p, origin=Origin(str(path), -1, 1)),
        dataclasses.replace(ev, origin=Origin(str(path), -1, 2)),
        dataclasses.replace(ev, origin=Origin(str(path), -1, 4)),
    ]


def test_bad_jsonl_lines_become_dead_letters_with_their_line(tmp_path: Path) -> None:
    ev = event_to_json(view(T0))
    lines = [
        "{not json",
        json.dumps({**ev, "customer_id": None}),
        json.dumps({**ev, "occurred_at": "yesterday"}),
        json.dumps({**ev, "colour": "red"}),
        json.dumps({**ev, "product": {"product_id": "p", "price": -3}}),
        json.dumps({"kind": "profile", "customer_id": "c", "updated_at": T0, "email": "nope"}),
        json.dumps([1, 2]),
        json.dumps({**ev, "session_id": "\udcff"}),  # a lone surrogate, spelt as an escape
        json.dumps({**ev, "session_id": "\U0001f600"}),  # a surrogate pair: fine
        json.dumps(ev),
    ]
    path = write(tmp_path, "e.jsonl", lines, raw_tail=b'{"event_id": "\xff"}\n')
    items = list(read_events_jsonl(path))
    dead = [(i.origin.offset, i.reason) for i in items if isinstance(i, DeadLetter)]
    assert dead == [(1, R_DECODE), (2, R_MISSING), (3, R_INVALID), (4, R_INVALID),
                    (5, R_INVALID), (6, R_INVALID), (7, R_INVALID), (8, R_DECODE),
                    (11, R_DECODE)]
    assert isinstance(items[8], BehaviourEvent) and isinstance(items[9], BehaviourEvent)
    assert items[0].raw == b"{not json"  # type: ignore[union-attr]
    assert items[-1].raw == b'{"event_id": "\xff"}'  # type: ignore[union-attr]


def test_synthesized_profiles_do_not_replace_real_ones() -> None:
    real = profile(T0, cid="c1")
    a, b = view(T0, cid="c1"), view(T0 + 1, cid="c2")
    items = list(with_synthesized_profiles([real, a, b, view(T0 + 2, cid="c2")]))
    assert items[:2] == [real, a]
    synthesized = items[2]
    assert isinstance(synthesized, CustomerProfile)
    assert (synthesized.customer_id, synthesized.email, synthesized.updated_at) == (
        "c2", "c2@example.invalid", T0 + 1)
    assert len(items) == 5


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=120) | st.text(max_size=120).map(str.encode), max_size=8))
def test_any_file_content_yields_items_or_dead_letters(tmp_path_factory: pytest.TempPathFactory,
                                                       lines: list[bytes]) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    body = b"\n".join(line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines) + b"\n"
    jsonl = directory / "e.jsonl"
    jsonl.write_bytes(body)
    csv = directory / "e.csv"
    csv.write_bytes(HEADER.encode() + b"\n" + body)
    for items in (read_events_jsonl(jsonl), read_rees46(csv)):
        for item in items:
            assert isinstance(item, BehaviourEvent | CustomerProfile | DeadLetter)


def test_deeply_nested_jsonl_is_a_dead_letter_and_the_replay_goes_on(tmp_path: Path) -> None:
    ev = event_to_json(view(T0))
    deep = "[" * 2000 + "]" * 2000
    deep_in_event = json.dumps({**ev, "properties": {}})[:-2] + '"x": ' + "{\"a\": " * 2000 \
        + "1" + "}" * 2000 + "}}"
    path = write(tmp_path, "e.jsonl", [deep, deep_in_event, json.dumps(ev)])
    items = list(read_events_jsonl(path))
    assert [(i.origin.offset, i.reason) for i in items[:2]] == [  # type: ignore[union-attr]
        (1, R_DECODE), (2, R_DECODE)]
    assert "deep" in items[0].error  # type: ignore[union-attr]
    assert isinstance(items[2], BehaviourEvent)


@pytest.mark.parametrize("changes", [
    {"quantity": 2147483648},
    {"quantity": 10**30},
    {"occurred_at": 2**63},
    {"order_id": "o1", "order_total": 10**400},
    {"product": {"product_id": "p", "price": 10**400}},
], ids=["int-overflow", "int-huge", "long-overflow", "total-overflow", "price-overflow"])
def test_numbers_avro_cannot_hold_are_dead_letters_and_never_reach_the_encoder(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    from transforms.codec import encode_event

    ev = event_to_json(view(T0))
    path = write(tmp_path, "e.jsonl", [json.dumps({**ev, **changes}), json.dumps(ev)])
    items = list(read_events_jsonl(path))
    assert isinstance(items[0], DeadLetter) and items[0].reason == R_INVALID
    assert isinstance(items[1], BehaviourEvent)
    encode_event(items[1])


def test_events_jsonl_consent_channels_are_normalised_and_unknown_ones_dead_lettered(
    tmp_path: Path,
) -> None:
    revoke = {**event_to_json(consent(T0, False)), "consent_channel": "EMAIL"}
    typo = {**revoke, "event_id": "typo", "consent_channel": "e-mail"}
    crm = {"kind": "profile", "customer_id": "c1", "updated_at": T0, "consents": {"Email": True},
           "consent_updated_at": T0 - 1}
    path = write(tmp_path, "e.jsonl", [json.dumps(revoke), json.dumps(typo), json.dumps(crm)])
    ev, dead, p = read_events_jsonl(path)
    assert isinstance(ev, BehaviourEvent) and ev.consent_channel == "email"
    assert isinstance(dead, DeadLetter) and (dead.reason, dead.origin.offset) == (R_INVALID, 2)
    assert "unknown consent channel 'e-mail'" in dead.error
    assert isinstance(p, CustomerProfile)
    assert (p.consents, p.consent_updated_at) == ({"email": True}, T0 - 1)
