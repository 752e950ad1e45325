"""The pickled form of states and model records is fixed (savepoints hold it): the C field
getters of Compact.__reduce__ and CustomerState.__getstate__ (a Flink state write pickles
every pending event) give the same bytes as the slot-by-slot form they replaced."""

import pickle
from dataclasses import dataclass
from typing import Any

import pytest

from pipelines.common import build_core
from runners import SHIPPED_DATA
from transforms import model
from transforms.model import BehaviourEvent, Compact, DeadLetter, Origin, Product
from transforms.readers import read_rees46
from transforms.settings import Settings
from transforms.state import CustomerState

T0 = 1_700_000_000_000


def slot_by_slot_reduce(obj: Any) -> tuple[type, tuple[Any, ...]]:
    """Compact.__reduce__ before the C getters: fields read one getattr at a time."""
    return type(obj), tuple([getattr(obj, name) for name in obj.__slots__])


def slot_by_slot_state(state: CustomerState) -> tuple[Any, ...]:
    """CustomerState.__getstate__ before the C getter."""
    return tuple([getattr(state, name) for name in state.__slots__])


def slot_by_slot_bytes(obj: Any, monkeypatch: pytest.MonkeyPatch) -> bytes:
    with monkeypatch.context() as m:
        m.setattr(Compact, "__reduce__", slot_by_slot_reduce)
        m.setattr(CustomerState, "__getstate__", slot_by_slot_state)
        return pickle.dumps(obj)


def test_an_event_pickles_to_its_fields_in_order(monkeypatch):
    event = BehaviourEvent(
        event_id="e1", customer_id="c1", event_type=model.PRODUCT_VIEW, occurred_at=T0,
        session_id="s1", product=Product("p1", "a.b", None, 1.5),
        origin=Origin("events", 3, 42))
    blob = pickle.dumps(event)
    assert blob == slot_by_slot_bytes(event, monkeypatch)
    assert pickle.loads(blob) == event
    assert event.__reduce__() == (BehaviourEvent, slot_by_slot_reduce(event)[1])


@dataclass(slots=True)
class One(Compact):
    """A record of one field: attrgetter of one name would return the bare value."""

    only: int


@dataclass(slots=True)
class Two(Compact):
    """A sibling of One: getters are per class."""

    first: int
    more: str


def test_a_one_field_record_still_pickles_a_tuple(monkeypatch):
    one = One(7)
    assert one.__reduce__() == (One, (7,))
    assert pickle.loads(pickle.dumps(one)) == one
    assert pickle.dumps(one) == slot_by_slot_bytes(one, monkeypatch)


def test_sibling_classes_each_read_their_own_fields(monkeypatch):
    one, two = One(1), Two(2, "x")
    assert two.__reduce__() == (Two, (2, "x"))
    assert one.__reduce__() == (One, (1,))          # after Two's getter was built
    assert pickle.loads(pickle.dumps(two)) == two
    assert pickle.dumps([one, two]) == slot_by_slot_bytes([one, two], monkeypatch)


def test_states_of_the_shipped_data_pickle_to_the_same_bytes_as_before(monkeypatch):
    """The states the core holds over the first 3 000 shipped records (pending events,
    windows, carts, profiles) pickle byte for byte as in the slot-by-slot form, and back."""
    core = build_core(Settings())
    states: dict[str, CustomerState | None] = {}
    checked = pending = 0
    for n, item in enumerate(read_rees46(SHIPPED_DATA)):
        if n == 3_000:
            break
        if isinstance(item, DeadLetter):
            continue
        state, _, _ = core.step(states.get(item.customer_id), item, None)
        states[item.customer_id] = state
        if state is not None and n % 5 == 0:
            blob = pickle.dumps((state, T0))
            assert blob == slot_by_slot_bytes((state, T0), monkeypatch)
            assert pickle.dumps(pickle.loads(blob)) == blob
            checked += 1
            pending += len(state.pending)
    assert checked > 100 and pending > checked          # states with events still pending
