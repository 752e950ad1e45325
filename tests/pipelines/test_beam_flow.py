"""The Beam run's Flow: which input offsets may be committed (never past unwritten outputs)."""

from __future__ import annotations

from pipelines.beam_local import Flow

TP = ("events", 0)


def batch(flow: Flow, size: int, last_offset: int) -> int:
    number = flow.open_batch()
    flow.close_batch(number, size, None, {TP: last_offset})
    return number


def test_offsets_are_committable_once_the_batch_is_stepped_and_its_outputs_written() -> None:
    flow = Flow()
    b = batch(flow, 2, 11)
    flow.add(b, decoded=2, routed=2)
    assert flow.committable == {}
    flow.emit(3)                          # the keyed step hands 3 outputs to the sinks
    flow.add(b, stepped=2)
    assert flow.committable == {}
    flow.written(2)
    assert flow.committable == {}
    flow.written(1)
    assert flow.committable == {TP: 11}


def test_a_batch_without_outputs_is_committable_when_nothing_else_is_unwritten() -> None:
    flow = Flow()
    b = batch(flow, 1, 5)
    flow.add(b, decoded=1, routed=1, stepped=1)
    assert flow.committable == {TP: 5} and flow.settled()


def test_an_output_never_written_holds_every_later_offset() -> None:
    flow = Flow()
    first = batch(flow, 1, 1)
    flow.emit(1)                          # a dead letter whose sink keeps failing
    flow.add(first, decoded=1, routed=0)
    for offset in (2, 3, 4):
        b = batch(flow, 1, offset)
        flow.emit(1)
        flow.add(b, decoded=1, routed=1, stepped=1)
        flow.written(1)                   # the later outputs are written
    assert flow.committable == {}
    assert not flow.settled()
    flow.written(1)                       # the failed one finally written (a retry)
    assert flow.committable == {TP: 4} and flow.settled()
