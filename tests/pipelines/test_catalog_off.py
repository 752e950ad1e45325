"""core.catalog_signals = false: a deployment without a catalog stream runs no product stage.

No runner builds or feeds the product stage, the price_drop / back_in_stock triggers are not
loaded, the Kafka jobs do not read the catalog-changes topic, and a catalog change that still
arrives (a replay file) is a dead letter `catalog_signals_off`, the same bytes on every runner.
Traffic without catalog changes gives the same outputs with the setting on or off.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import reference, wire
from pipelines.common import build_core, changes_topic
from pipelines.flink_kafka import KafkaRead
from pipelines.flink_pipeline import reads_changes
from pipelines.reference import ReferenceRunner
from runners.traffic import Traffic, TrafficConfig, jsonl_line
from tests.builders import HOUR, MINUTE, SECOND, T0, profile, view
from tests.pipelines.test_catalog_parity import catalog_items
from transforms.catalog_changes import (
    BACK_IN_STOCK,
    PRICE_DROP,
    R_SIGNALS_OFF,
    CatalogChange,
    encode_change,
)
from transforms.model import DEAD_LETTER, R_FUTURE, R_LATE, DeadLetter, Origin
from transforms.readers import read_events_jsonl
from transforms.settings import Settings
from transforms.triggers import load_triggers

OFF = ["core.catalog_signals=false"]
FILES = ("payloads.jsonl", "audit.jsonl", "dead_letters.jsonl", "features.jsonl",
         "outcomes.jsonl")
WALL = T0 + 365 * 24 * HOUR          # the wall clock at receipt, well after every item


def off() -> Settings:
    return Settings().with_overrides(OFF)


FILE_LINE = Origin("journeys.jsonl", 0, 7)


def change(t: int, price: float = 90.0, pid: str = "p1",
           origin: Origin | None = FILE_LINE) -> CatalogChange:
    return CatalogChange(f"ch-{t}", pid, t, price, None, "shoes", origin=origin)


def dead_letters(out: list) -> list[DeadLetter]:
    return [r for k, r in out if k == DEAD_LETTER]


# ------------------------------------------------------------------------------ the rules


def test_signal_triggers_are_loaded_only_with_catalog_signals() -> None:
    on_types = {t.type for t in load_triggers(Settings().core)}
    off_types = {t.type for t in load_triggers(off().core)}
    assert {PRICE_DROP, BACK_IN_STOCK} <= on_types
    assert on_types - off_types == {PRICE_DROP, BACK_IN_STOCK}
    assert not build_core(off()).signalled


def test_admit_refuses_a_change_with_its_bytes_origin_and_receipt() -> None:
    c = change(T0)
    assert wire.admit(c, Settings().core, WALL) is c
    dead = wire.admit(c, off().core, WALL)
    assert isinstance(dead, DeadLetter)
    assert (dead.reason, dead.origin, dead.received_at) == (R_SIGNALS_OFF, c.origin, WALL)
    assert dead.raw == encode_change(c) and "core.catalog_signals" in dead.error


def test_a_change_from_the_future_is_refused_as_off_not_as_future() -> None:
    # Off, a change is not taken at all: its time is never looked at.
    dead = wire.admit(change(WALL + HOUR), off().core, WALL)
    assert dead.reason == R_SIGNALS_OFF
    assert wire.admit(change(WALL + HOUR), Settings().core, WALL).reason == R_FUTURE


def test_a_replayed_change_has_no_receipt_time_and_other_items_pass() -> None:
    c, v = change(T0), view(T0)
    assert wire.replayed(c, Settings().core) is c
    assert wire.replayed(v, off().core) is v
    dead = wire.replayed(c, off().core)
    assert (dead.reason, dead.received_at) == (R_SIGNALS_OFF, 0)


def test_kafka_jobs_do_not_read_the_changes_topic_when_off() -> None:
    assert changes_topic(Settings()) == Settings().kafka.catalog_changes_topic
    assert changes_topic(off()) is None
    assert changes_topic(Settings().with_overrides(["kafka.catalog_changes_topic="])) is None
    # A bounded read whose stop offsets name the topic: still not read (no broker asked).
    topic = Settings().kafka.catalog_changes_topic
    read = KafkaRead(stop={(topic, 0): 10})
    assert reads_changes(Settings(), read)
    assert not reads_changes(off(), read)


# ------------------------------------------------------------------------------ reference


def test_reference_has_no_product_stage_and_dead_letters_each_change() -> None:
    out: list = []
    runner = ReferenceRunner(build_core(off()), out.append, clock=lambda: WALL)
    assert runner.products is None
    for item in (profile(T0 - HOUR), view(T0), view(T0 + MINUTE), change(T0 + 2 * MINUTE)):
        runner.feed(item)
    runner.finish()
    (dead,) = dead_letters(out)
    assert (dead.reason, dead.received_at) == (R_SIGNALS_OFF, 0)


def test_a_refused_change_never_moves_the_clock() -> None:
    # Hostile: a change an hour ahead of the views, then a view 1 s after the first. Taken, the
    # change moves the watermark past that view, which is then late; refused, it does not.
    # All in one partition (no origin, as the views).
    items = [profile(T0 - HOUR), view(T0), change(T0 + HOUR, origin=None),
             view(T0 + SECOND, "p2")]

    def reasons(settings: Settings) -> list[str]:
        out: list = []
        runner = ReferenceRunner(build_core(settings), out.append, clock=lambda: WALL)
        for item in items:
            runner.feed(item)
        runner.finish()
        return sorted(d.reason for d in dead_letters(out))

    assert reasons(Settings()) == [R_LATE]
    assert reasons(off()) == [R_SIGNALS_OFF]


def test_reference_dead_letters_every_change_of_a_replay_and_fires_no_signal(tmp_path) -> None:
    items = catalog_items(tmp_path)
    on = reference.run_replay(items, Settings(), tmp_path / "on")
    summary = reference.run_replay(items, off(), tmp_path / "off")
    changes = sum(isinstance(i, CatalogChange) for i in items)
    assert changes > 50
    assert summary["dead_letters"][R_SIGNALS_OFF] == changes
    assert not [k for k in summary["decisions"] if k.split(":")[0] in (PRICE_DROP, BACK_IN_STOCK)]
    # The file's bad lines are dead letters for their own reasons, as with the setting on.
    assert {k: v for k, v in summary["dead_letters"].items() if k != R_SIGNALS_OFF} == \
        on["dead_letters"]


def traffic(tmp_path: Path, events: int = 1500) -> list:
    """Generated traffic (duplicates, out of order, malformed lines), no catalog change,
    written to and read back from a replay file."""
    cfg = TrafficConfig(events=events, customers=80, rate=0.05, seed=5, duplicate_ratio=0.02,
                        out_of_order_ms=8_000, malformed_ratio=0.02)
    path = tmp_path / "traffic.jsonl"
    path.write_text("".join(jsonl_line(i) + "\n" for i in Traffic(cfg)))
    return list(read_events_jsonl(path))


def test_traffic_without_changes_gives_the_same_files_on_or_off(tmp_path) -> None:
    items = traffic(tmp_path)
    on = reference.run_replay(items, Settings(), tmp_path / "on")
    summary = reference.run_replay(items, off(), tmp_path / "off")
    assert summary == on
    assert on["payloads"] > 0
    for name in (*FILES, "summary.json"):
        assert (tmp_path / "off" / name).read_bytes() == (tmp_path / "on" / name).read_bytes()


# ------------------------------------------------------------------------------ engines


def _same_files(a: Path, b: Path, names: tuple[str, ...] = FILES) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs"


@pytest.mark.engine
def test_beam_builds_no_product_stage_and_matches_the_reference(tmp_path) -> None:
    import apache_beam as beam

    from pipelines import beam_pipeline
    from pipelines.beam_sinks import file_sinks
    from pipelines.wire import CHANGES, EVENTS, PROFILES

    def labels(settings: Settings) -> set[str]:
        p = beam.Pipeline(options=beam_pipeline.streaming_options())
        inputs = p | "ReadReplay" >> beam_pipeline.replay_stream(
            [], settings.core, beam_pipeline.flow(beam_pipeline.Local()))
        beam_pipeline.build_pipeline(p, inputs[EVENTS], inputs[PROFILES],
                                     file_sinks(beam_pipeline.Local()), settings,
                                     changes=inputs[CHANGES])
        return {label.split("/")[0] for label in p.applied_labels}

    assert "PerProduct" in labels(Settings())
    assert not {"PerProduct", "KeySignals", "MergeProductInputs"} & labels(off())

    items = catalog_items(tmp_path, events=900, out_of_order_ms=12_000)
    ref = reference.run_replay(items, off(), tmp_path / "reference")
    ours = beam_pipeline.run_replay(items, off(), tmp_path / "beam")
    assert ours == ref
    assert ref["dead_letters"][R_SIGNALS_OFF] == sum(isinstance(i, CatalogChange) for i in items)
    _same_files(tmp_path / "beam", tmp_path / "reference", (*FILES, "summary.json"))


@pytest.mark.engine
def test_beam_dead_letters_changes_fed_to_its_changes_input() -> None:
    # A caller that hands build_pipeline a changes input with the setting off (not a replay:
    # no wire.replayed at the source): DecodeChanges dead-letters each change (wire.admit).
    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue
    from apache_beam.utils.timestamp import Timestamp

    from pipelines.beam_local import Local
    from pipelines.beam_pipeline import build_pipeline, run_to_end, streaming_options
    from pipelines.wire import CHANGES, EVENTS, PROFILES, SINKS
    from tests.pipelines.test_beam_pipeline import Record

    c = change(T0)
    stream = TestStream(output_tags=[EVENTS, PROFILES, CHANGES])
    stream.add_elements([TimestampedValue((c, None, WALL, None), Timestamp(micros=T0 * 1000))],
                        tag=CHANGES)
    stream.advance_watermark_to_infinity(tag=EVENTS)
    stream.advance_watermark_to_infinity(tag=PROFILES)
    stream.advance_watermark_to_infinity(tag=CHANGES)
    local = Local()
    try:
        p = beam.Pipeline(options=streaming_options())
        inputs = p | "Script" >> stream
        build_pipeline(p, inputs[EVENTS], inputs[PROFILES],
                       {kind: beam.ParDo(Record(local, kind)) for kind in SINKS}, off(),
                       local=local, changes=inputs[CHANGES])
        run_to_end(p)
        recorded = list(local.get("recorded", list))
    finally:
        local.close()
    (dead,) = dead_letters(recorded)
    assert (dead.reason, dead.received_at, dead.raw) == (R_SIGNALS_OFF, WALL, encode_change(c))


@pytest.mark.engine
def test_flink_builds_no_product_stage_and_matches_the_reference(tmp_path) -> None:
    from pipelines import flink_pipeline

    def plan(settings: Settings) -> str:
        env = flink_pipeline.make_env(settings, local=True, checkpointing=False)
        path = tmp_path / "empty.txt"
        path.write_text("")
        flink_pipeline.build_replay(env, path, settings)
        return str(env.get_execution_plan())

    assert "PerProduct" in plan(Settings())
    assert "PerProduct" not in plan(off()) and "ProductsWatermarks" not in plan(off())

    items = catalog_items(tmp_path, events=700, out_of_order_ms=12_000)
    ref = reference.run_replay(items, off(), tmp_path / "reference")
    ours = flink_pipeline.run_replay(items, off(), tmp_path / "flink")
    assert ours == ref
    assert ref["dead_letters"][R_SIGNALS_OFF] == sum(isinstance(i, CatalogChange) for i in items)
    _same_files(tmp_path / "flink", tmp_path / "reference")
