"""The Beam topology on the DirectRunner, driven by TestStream with explicit watermarks.

Each test scripts what a source would send: items with the watermark of their partition before
each of them (transforms/clock.py), watermark advances (the source's, after a poll; or an idle
source's advance with no items), and probes: marker elements recorded, in order,
with the outputs. The DirectRunner drains all work and fires every due timer before it takes
the next TestStream event, so a payload recorded before a probe was emitted before that point
of the script.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.beam_local import KafkaRecord, Local, tally
from pipelines.beam_pipeline import build_pipeline, run_to_end, streaming_options
from pipelines.wire import EVENTS, PROFILES, SINKS, event_time_of
from tests.builders import CART_DELAY, MINUTE, SECOND, T0, add, profile, view
from transforms.clock import EventClock
from transforms.codec import encode_event, encode_profile
from transforms.model import (
    AUDIT,
    DEAD_LETTER,
    PAYLOAD,
    R_DECODE,
    R_LATE,
    CustomerProfile,
    DeadLetter,
    event_time,
)
from transforms.settings import CoreSettings, Settings

pytestmark = pytest.mark.engine

OOO = CoreSettings().max_out_of_orderness
PROBE = "probe"
WALL = T0 + 365 * 24 * 3600 * SECOND      # the wall clock when the source read the items


class Script:
    """Builds the TestStream a source would send (see the module docstring)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.clock = EventClock(self.settings.core)
        self.idle: int | None = None       # an idle source's watermark, ahead of the clock's
        self.stream = TestStream(output_tags=[EVENTS, PROFILES, PROBE])
        self.sent: int | None = None

    def items(self, *items: Any) -> Script:
        """Items read in this order (one poll), then the source's new watermark."""
        for item in items:
            wm = self.clock.partition_watermark(None)
            profile_ = isinstance(item, CustomerProfile) or (
                isinstance(item, KafkaRecord) and item.topic == PROFILES)
            tag = PROFILES if profile_ else EVENTS
            stamp = event_time(item) if not isinstance(item, (DeadLetter, KafkaRecord)) else wm or 0
            # No batch number: the run's Flow does not count these, so timers wake the core at
            # their own times, exactly when the scripted watermark passes them.
            element = (item, wm, WALL, None)
            self.stream.add_elements([TimestampedValue(element, _ts(stamp))], tag=tag)
            if not isinstance(item, (DeadLetter, KafkaRecord)):
                self.clock.observe(None, event_time(item), WALL)
        return self._advance()

    def watermark(self, t: int) -> Script:
        """An idle source moves its watermark to t: no items, only the watermark."""
        self.idle = t
        return self._advance()

    def probe(self, name: str) -> Script:
        """A marker recorded in order with the outputs."""
        stamp = _ts(self._watermark() or 0)
        self.stream.add_elements([TimestampedValue(name, stamp)], tag=PROBE)
        return self

    def _watermark(self) -> int | None:
        wm = self.clock.watermark
        return self.idle if wm is None or (self.idle is not None and self.idle > wm) else wm

    def _advance(self) -> Script:
        wm = self._watermark()
        if wm is not None and (self.sent is None or wm > self.sent):
            self.sent = wm
            for tag in (EVENTS, PROFILES, PROBE):
                self.stream.advance_watermark_to(_ts(wm), tag=tag)
        return self


def _ts(ms: int) -> Timestamp:
    return Timestamp(micros=ms * 1000)


class Record(beam.DoFn):
    """A test sink: appends (kind, record) to the run's list, in processing order."""

    def __init__(self, local: Local, kind: str) -> None:
        self.local = local
        self.kind = kind

    def process(self, record: Any) -> Any:
        self.local.get("recorded", list).append((self.kind, record))
        return ()


def run(script: Script, check: Any = None) -> tuple[list[tuple[str, Any]], dict[str, int]]:
    """Run the topology over the script; the recorded outputs in order, and the run's tally.

    `check(outputs)` may add assert_that checks on the PCollections build_pipeline returns."""
    local = Local()
    recorded = local.get("recorded", list)
    try:
        p = beam.Pipeline(options=streaming_options())
        inputs = p | "Script" >> script.stream
        sinks = {kind: beam.ParDo(Record(local, kind)) for kind in SINKS}
        outputs = build_pipeline(p, inputs[EVENTS], inputs[PROFILES], sinks, script.settings,
                                 local=local)
        inputs[PROBE] | "Probes" >> beam.ParDo(Record(local, PROBE))
        if check is not None:
            check(outputs)
        run_to_end(p)
        return list(recorded), tally(local).snapshot()
    finally:
        local.close()


def of(kind: str, recorded: list[tuple[str, Any]]) -> list[Any]:
    return [r for k, r in recorded if k == kind]


def order(recorded: list[tuple[str, Any]]) -> list[str]:
    """Probes and payloads in the order they were recorded."""
    return [r if k == PROBE else f"payload:{r.trigger.type}@{r.trigger.fired_at}"
            for k, r in recorded if k in (PROBE, PAYLOAD)]


def trigger_of(p: Any) -> tuple[str, str, int, tuple[str, ...]]:
    return p.customer_id, p.trigger.type, p.trigger.fired_at, tuple(p.trigger.evidence)


def decision_of(a: Any) -> tuple[str, str, int, str]:
    return a.customer_id, a.type, a.fired_at, a.decision


# ------------------------------------------------------------------------------------ triggers


def test_cart_abandonment_fires_at_the_deadline_when_an_idle_watermark_passes_it():
    deadline = T0 + CART_DELAY
    script = (
        Script()
        .items(profile(T0 - MINUTE), add(T0, "p1"), view(T0 + 20 * SECOND, "p2"))
        .probe("cart-added")
        .watermark(deadline - 1)          # idle: only the watermark moves, not yet the deadline
        .probe("just-before-deadline")
        .watermark(deadline)              # idle again: reaches the deadline
        .probe("deadline-passed")
    )

    def check(outputs):
        assert_that(outputs[PAYLOAD] | beam.Map(trigger_of),
                    equal_to([("c1", "cart_abandonment", deadline, ("p1",))]), label="Payloads")
        assert_that(outputs[AUDIT] | beam.Map(decision_of),
                    equal_to([("c1", "cart_abandonment", deadline, "emitted")]), label="Audit")

    recorded, counts = run(script, check)
    assert order(recorded) == [
        "cart-added", "just-before-deadline",
        f"payload:cart_abandonment@{deadline}",
        "deadline-passed",
    ]
    (payload,) = of(PAYLOAD, recorded)
    (audit,) = of(AUDIT, recorded)
    assert audit.message_id == payload.message_id
    assert payload.recipient_email == "ada@example.com"      # the profile met the events
    assert of(DEAD_LETTER, recorded) == []
    assert counts["active_customers"] == 0                    # all state expired at the end


def test_cart_abandonment_does_not_fire_when_the_cart_changes_before_the_deadline():
    script = (
        Script()
        .items(profile(T0 - MINUTE), add(T0, "p1"))
        .items(add(T0 + 4 * MINUTE, "p2"))
        .watermark(T0 + CART_DELAY)       # the first deadline, no longer armed
        .probe("first-deadline-passed")
        .watermark(T0 + 4 * MINUTE + CART_DELAY)
        .probe("second-deadline-passed")
    )
    recorded, _ = run(script)
    fired = T0 + 4 * MINUTE + CART_DELAY
    assert order(recorded) == [
        "first-deadline-passed", f"payload:cart_abandonment@{fired}", "second-deadline-passed",
    ]
    (payload,) = of(PAYLOAD, recorded)
    assert sorted(payload.trigger.evidence) == ["p1", "p2"]


def test_browse_intensity_fires_at_the_fifth_view_once_the_watermark_passes_it():
    views = [view(T0 + i * MINUTE, f"p{i}", "shoes") for i in range(1, 6)]
    fifth = T0 + 5 * MINUTE
    script = (
        Script()
        .items(profile(T0 - MINUTE), *views)
        .probe("views-read")              # watermark = fifth - OOO - 1: not yet
        .watermark(fifth)
        .probe("fifth-view-passed")
    )

    def check(outputs):
        assert_that(outputs[PAYLOAD] | beam.Map(trigger_of), equal_to([
            ("c1", "browse_intensity", fifth, ("p1", "p2", "p3", "p4", "p5"))]), label="Payloads")
        assert_that(outputs[AUDIT] | beam.Map(decision_of),
                    equal_to([("c1", "browse_intensity", fifth, "emitted")]), label="Audit")

    recorded, _ = run(script, check)
    assert order(recorded) == ["views-read", f"payload:browse_intensity@{fifth}",
                               "fifth-view-passed"]


def test_out_of_order_arrival_within_the_bound_gives_the_in_order_result():
    times = [T0 + s * SECOND for s in (1, 2, 3, 4, 5)]
    in_order = [view(t, f"p{i}", "shoes", eid=f"v{i}") for i, t in enumerate(times, start=1)]
    shuffled = [in_order[i] for i in (2, 0, 4, 1, 3)]      # spread 4 s < max_out_of_orderness
    assert times[-1] - times[0] < OOO

    results = []
    for arrival in (in_order, shuffled):
        recorded, _ = run(Script().items(profile(T0 - MINUTE), *arrival))
        assert of(DEAD_LETTER, recorded) == []
        results.append([trigger_of(p) for p in of(PAYLOAD, recorded)])
    assert results[0] == results[1] == [
        ("c1", "browse_intensity", times[-1], ("p1", "p2", "p3", "p4", "p5"))]


def test_an_event_behind_the_watermark_is_a_late_dead_letter_and_changes_nothing():
    script = (
        Script()
        .items(profile(T0 - MINUTE), add(T0, "p1"))
        .items(view(T0 + 4 * MINUTE, "p9"))           # moves the watermark past T0 + 2 min
        .items(add(T0 + 2 * MINUTE, "p2"))            # behind it: late
    )
    recorded, _ = run(script)
    (dead,) = of(DEAD_LETTER, recorded)
    assert dead.reason == R_LATE
    (payload,) = of(PAYLOAD, recorded)
    assert (payload.trigger.fired_at, payload.trigger.evidence) == (T0 + CART_DELAY, ["p1"])


def test_kafka_records_are_decoded_and_bad_bytes_are_dead_letters_with_their_origin():
    ev = add(T0, "p1")
    script = Script().items(
        KafkaRecord(PROFILES, 0, 7, encode_profile(profile(T0 - MINUTE)), T0),
        KafkaRecord(EVENTS, 1, 41, encode_event(ev), T0),
        KafkaRecord(EVENTS, 1, 42, b"\x02garbage", T0),
    ).watermark(T0 + CART_DELAY)
    recorded, _ = run(script)
    (dead,) = of(DEAD_LETTER, recorded)
    assert (dead.reason, dead.origin.topic, dead.origin.partition, dead.origin.offset) == (
        R_DECODE, EVENTS, 1, 42)
    (payload,) = of(PAYLOAD, recorded)
    assert payload.source_event_ids == [ev.event_id]


# ------------------------------------------------------------------------ the source's watermark


def test_event_time_of_reads_occurred_at_without_decoding():
    ev = view(T0 + 1234)
    assert event_time_of(EVENTS, encode_event(ev), CoreSettings()) == T0 + 1234
    assert event_time_of(EVENTS, encode_event(ev)[:9], CoreSettings()) is None
    assert event_time_of(PROFILES, encode_profile(profile(T0)), CoreSettings()) == T0
    assert event_time_of(PROFILES, b"\x02x", CoreSettings()) is None
