"""The clock through a real Kafka on both engines (local runners, the branch's code), the
flink.idleness the default 2 s:
- a backlog over 8 partitions by customer key, one customer's partition minutes behind the
  others: lateness is per partition (transforms/clock.py), so its views are on time, as in a
  reference replay of the same items over 8 partitions;
- live traffic with one event 290 s ahead of the wall clock (issue 16): it moves its
  partition's clock at most to the wall clock, so no other customer's event is late."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import pytest

from pipelines import beam_kafka, flink_pipeline, reference
from pipelines.beam_kafka import ReadOptions
from runners.services import ensure_topics, kafka_connector_jar
from tests.builders import MINUTE, SECOND, T0, add, profile, view
from tests.pipelines.test_flink_pipeline import consume, kafka_settings, produce
from tests.pipelines.test_parity_flink import journeys
from tests.pipelines.test_parity_partitions import PROFILE_AHEAD_FIRE, profile_ahead
from transforms.clock import kafka_partition
from transforms.codec import decode_dead_letter, decode_payload
from transforms.model import DeadLetter

pytestmark = [pytest.mark.integration, pytest.mark.engine]

PARTITIONS = 8


def skewed_backlog(tag: str) -> list:
    """The parity journeys, then five views of a customer alone in its partition, stamped at
    T0 .. T0 + 4 min but read after the others' views of T0 + 2 h."""
    items = journeys(tag)
    used = {kafka_partition(i.customer_id.encode(), PARTITIONS) for i in items
            if not isinstance(i, DeadLetter)}
    cid = next(c for c in (f"{tag}-skew-{n}" for n in range(1000))
               if kafka_partition(c.encode(), PARTITIONS) not in used)
    items.insert(0, profile(T0 - 60 * MINUTE, cid=cid, email=f"{cid}@example.com"))
    items += [view(T0 + k * MINUTE, f"k{k}", "hats", cid=cid) for k in range(5)]
    return items


@pytest.mark.parametrize("engine", ["beam", "flink"])
def test_a_partition_minutes_behind_in_a_backlog_is_not_late(kafka, tmp_path, engine):
    s = kafka_settings(kafka, **{"flink.idleness": "2s"})
    items = skewed_backlog(s.kafka.group_id)
    ref_settings = kafka_settings(kafka)
    ref_settings.core.replay_partitions = PARTITIONS
    want = reference.run_replay(items, ref_settings, tmp_path / "ref")
    assert want["decisions"]["browse_intensity:emitted"] == 2     # the skewed customer's too
    run(engine, s, produce(s, items, partitions=PARTITIONS))
    got = sorted(decode_payload(r.value).message_id for r in consume(s, s.kafka.payloads_topic))
    assert got == sorted(json.loads(line)["message_id"]
                         for line in (tmp_path / "ref" / "payloads.jsonl").open())
    dead = Counter(decode_dead_letter(r.value).reason
                   for r in consume(s, s.kafka.dead_letters_topic, 1000))
    assert dead == Counter(want["dead_letters"])


def run(engine: str, s, n: int) -> None:
    if engine == "beam":
        beam_kafka.run_kafka_job(s, ReadOptions(max_events=n, from_beginning=True),
                                 create_topics=ensure_topics)
    else:
        options = argparse.Namespace(runner="flink", max_events=n, until_idle=None,
                                     from_beginning=True, savepoint=None, detached=False)
        assert flink_pipeline.run_kafka(s, [kafka_connector_jar(s)], options) == 0


@pytest.mark.parametrize("engine", ["beam", "flink"])
def test_one_event_stamped_minutes_ahead_makes_no_other_customer_late(kafka, engine):
    # Live traffic stamped 2 min ahead of the wall clock (skewed clients, inside max_future),
    # one event 290 s ahead, then the other customers' views, all in one partition. The job
    # must read them within 130 s, or the wall clock itself passes the normal events.
    s = kafka_settings(kafka, **{"flink.idleness": "2s"})
    tag = s.kafka.group_id
    base = time.time_ns() // 1_000_000 + 2 * MINUTE
    customers = [f"{tag}-live-{n}" for n in range(10)]
    items: list = [profile(base - MINUTE, cid=c, email=f"{c}@example.com") for c in customers]
    items.append(add(base + 290 * SECOND - 2 * MINUTE, "p-skew", cid=f"{tag}-skewed"))
    for k in range(5):
        items += [view(base + k * SECOND + i * 10, f"p{k}", "shoes", cid=c)
                  for i, c in enumerate(customers)]
    n = produce(s, items, partitions=1)
    run(engine, s, n)
    dead = [decode_dead_letter(r.value) for r in consume(s, s.kafka.dead_letters_topic, 1000)]
    assert [d.reason for d in dead] == []
    payloads = [decode_payload(r.value) for r in consume(s, s.kafka.payloads_topic)]
    assert sorted(p.customer_id for p in payloads) == sorted(customers)


@pytest.mark.parametrize("engine", ["beam", "flink"])
def test_a_profile_stamped_ahead_of_the_events_makes_none_of_them_late(kafka, tmp_path, engine):
    # The 2026-12-06 cluster defect: profiles are a topic of their own, so a CRM update stamped
    # a minute ahead moves no watermark of the events, as in a reference replay over the same
    # one partition (transforms/clock.py, ProfilePartition).
    s = kafka_settings(kafka, **{"flink.idleness": "2s"})
    items = profile_ahead(s.kafka.group_id)
    ref_settings = kafka_settings(kafka)
    ref_settings.core.replay_partitions = 1
    want = reference.run_replay(items, ref_settings, tmp_path / "ref")
    assert want["dead_letters"] == {"late": 1}
    run(engine, s, produce(s, items, partitions=1))
    # The fifth view fires browse at its time. (Its decision is not compared: the profiles
    # topic is read beside the events', so under load a's consent may come after that fire.)
    audit = [json.loads(r.value) for r in consume(s, s.kafka.audit_topic, 1000)]
    assert [(a["type"], a["fired_at"]) for a in audit] == [("browse_intensity", PROFILE_AHEAD_FIRE)]
    dead = Counter(decode_dead_letter(r.value).reason
                   for r in consume(s, s.kafka.dead_letters_topic, 1000))
    assert dead == Counter(want["dead_letters"])
