"""`personalize run --runner flink-cluster`: the job on the standalone cluster of
`personalize services`, through the real Kafka: Avro events in, payloads read back with a
read_committed consumer and decoded."""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

import pytest

from pipelines import reference, wire
from runners.cli import main
from runners.flink_cluster import submit_to_cluster
from runners.traffic import DEFAULT_START, Traffic, TrafficConfig, jsonl_line
from tests.builders import MINUTE, T0
from tests.pipelines.test_flink_pipeline import consume, kafka_settings, produce
from tests.pipelines.test_parity_flink import JOURNEY_TRIGGERS, journeys
from transforms.codec import decode_dead_letter, decode_payload, encode_event
from transforms.settings import DAY

pytestmark = pytest.mark.integration


def test_the_job_on_the_cluster_turns_kafka_events_into_payloads(kafka, flink_cluster, tmp_path):
    """The parity journeys through Kafka (events in two partitions, keyed by customer) give the
    reference runner's payloads and dead letters. Among them the {tag}-dup customer's late view
    (T0 + 2 min, read after that customer's T0 + 5 min view in the same partition) is late
    within its own partition, so it is a dead letter whichever partition the source reads
    first, and whether or not the other one delivered anything yet. The job reads them as a
    backlog with the default 2 s idleness: a partition fetched after the other, however long
    that takes under load, holds the timers while it has records left (transforms/clock.py)."""
    s = kafka_settings(kafka, **{"flink.idleness": "2s"})
    tag = s.kafka.group_id
    items = journeys(tag)
    want = reference.run_replay(items, s, tmp_path / "ref")
    late = [d for d in items if getattr(d, "customer_id", None) == f"{tag}-dup"][-1]
    n = produce(s, items)
    options = argparse.Namespace(runner="flink-cluster", max_events=n, from_beginning=True,
                                 until_idle=None, savepoint=None, detached=True, job_name=tag)
    job_id = submit_to_cluster(s, options)
    try:
        assert flink_cluster.wait_job(job_id, timeout=300) == "FINISHED"
    finally:
        flink_cluster.cancel(job_id)
    payloads = [(r.key, dict(r.headers), decode_payload(r.value))
                for r in consume(s, s.kafka.payloads_topic)]
    triggers = sorted(p.trigger.type for _, _, p in payloads)
    assert set(triggers) == JOURNEY_TRIGGERS and len(triggers) == len(JOURNEY_TRIGGERS)
    expected_ids = sorted(json.loads(line)["message_id"]
                          for line in (tmp_path / "ref" / "payloads.jsonl").open())
    assert sorted(p.message_id for _, _, p in payloads) == expected_ids
    for key, headers, payload in payloads:
        assert key == payload.customer_id.encode()
        assert headers[wire.MESSAGE_ID_HEADER] == payload.message_id.encode()
        assert payload.recipient_email == f"{payload.customer_id}@example.com"
    dead = {d.reason: d for d in (decode_dead_letter(r.value)
                                  for r in consume(s, s.kafka.dead_letters_topic, 1000))}
    assert want["dead_letters"] == {"decode_error": 1, "late": 1}
    assert sorted((d.reason, d.origin.topic) for d in dead.values()) == [
        ("decode_error", s.kafka.events_topic), ("late", s.kafka.events_topic)]
    assert dead["decode_error"].origin.offset >= 0
    assert dead["decode_error"].raw == b"\x02\x03truncated"
    assert dead["late"].raw == encode_event(late) and late.occurred_at == T0 + 2 * MINUTE


# The 1-partition case holds a CRM update stamped ahead of a later-read view of another
# customer (the reference once counted profiles in the events' partition: transforms/clock.py
# ProfilePartition; tests/pipelines/test_parity_partitions.py::profile_ahead).
@pytest.mark.parametrize("partitions, days", [
    pytest.param(1, 0, id="1-partition"),
    pytest.param(4, 2, id="4-partitions-2-days"),
])
def test_a_replay_through_the_cluster_writes_the_reference_files(
        kafka, flink_cluster, tmp_path, capsys, partitions, days):
    """`personalize replay --runner flink-cluster` on generated traffic (duplicates, malformed
    lines, arrivals out of order, so late dead letters; with `days`, a second burst that many
    days later) writes byte-identical payloads, audit and dead letters to `--runner
    reference` with the customers over the same partitions, and deletes the topics it
    created."""
    from kafka.admin import KafkaAdminClient

    lines = []
    starts = [DEFAULT_START] + ([DEFAULT_START + days * DAY] if days else [])
    for burst, start in enumerate(starts):
        cfg = TrafficConfig(events=300, customers=40, rate=2.0, seed=7 + burst, start=start,
                            duplicate_ratio=0.03, out_of_order_ms=12_000, malformed_ratio=0.03)
        lines += [jsonl_line(g) + "\n" for g in Traffic(cfg)]
    path = tmp_path / "traffic.jsonl"
    path.write_text("".join(lines))
    replay = ["replay", "--input", str(path), "--format", "events-jsonl", "--set",
              "flink.checkpoint_interval=1s", "--set", f"kafka.partitions={partitions}",
              "--set", f"core.replay_partitions={partitions}", "--runner"]
    assert main([*replay, "reference", "--out", str(tmp_path / "ref")]) == 0
    want = json.loads(capsys.readouterr().out)
    assert main([*replay, "flink-cluster", "--out", str(tmp_path / "cluster")]) == 0
    got = json.loads(capsys.readouterr().out)
    assert want["dead_letters"]["late"] > 0 and want["dead_letters"]["decode_error"] > 0
    for name in ("payloads", "audit", "dead_letters"):
        assert (tmp_path / "cluster" / f"{name}.jsonl").read_text() == \
            (tmp_path / "ref" / f"{name}.jsonl").read_text(), name
    assert (tmp_path / "cluster" / "report.html").is_file()
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(got["topics"])]
    finally:
        admin.close()


def test_a_job_stopped_with_a_savepoint_resumes_from_it(kafka, flink_cluster, tmp_path):
    """Stop mid-journey with a savepoint (no drain), resume with --savepoint: the cart added
    before the stop is in the restored state and abandons after the resume."""
    from tests.builders import CART_DELAY, T0, add, profile, view

    s = kafka_settings(kafka)
    tag = s.kafka.group_id
    cid = f"{tag}-cart"
    produce(s, [profile(T0 - 3_600_000, cid=cid, email=f"{cid}@example.com"), add(T0, cid=cid)])
    options = argparse.Namespace(runner="flink-cluster", max_events=None, from_beginning=True,
                                 until_idle=None, savepoint=None, detached=True, job_name=tag)
    job_id = submit_to_cluster(s, options)
    try:
        _wait(lambda: flink_cluster.rest(f"/jobs/{job_id}")["state"] == "RUNNING")
        _wait(lambda: flink_cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"])
        savepoint = _stop_with_savepoint(flink_cluster, job_id, (tmp_path / "sp").as_uri())
    finally:
        flink_cluster.cancel(job_id)
    assert consume(s, s.kafka.payloads_topic, 1000) == []          # the deadline is still ahead
    options.savepoint = savepoint
    job_id = submit_to_cluster(s, options)
    try:
        found: list = []
        later = iter(range(1, 1000))

        def cart_abandoned() -> bool:
            # Traffic goes on (a watermark only moves with records), past the cart's deadline.
            minute = next(later)
            produce(s, [view(T0 + CART_DELAY + minute * 60_000, "z9", "bg", cid=f"{tag}-bg")])
            found.extend(consume(s, s.kafka.payloads_topic, 1000))
            return bool(found)

        _wait(cart_abandoned, 180)
        restored = flink_cluster.rest(f"/jobs/{job_id}/checkpoints")["latest"]["restored"]
        assert restored and restored["is_savepoint"]
    finally:
        flink_cluster.cancel(job_id)
    payloads = [decode_payload(r.value) for r in found]
    assert [(p.customer_id, p.trigger.type) for p in payloads] == [(cid, "cart_abandonment")]


def _wait(check, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def _stop_with_savepoint(cluster, job_id: str, target: str) -> str:
    """POST /jobs/:id/stop (no drain); the savepoint's location once it completed."""
    request = urllib.request.Request(
        f"{cluster.endpoint}/jobs/{job_id}/stop", method="POST",
        data=json.dumps({"drain": False, "targetDirectory": target}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        trigger = json.loads(response.read())["request-id"]
    answer: dict = {}

    def done() -> bool:
        answer.update(cluster.rest(f"/jobs/{job_id}/savepoints/{trigger}"))
        return answer["status"]["id"] == "COMPLETED"

    _wait(done)
    assert "location" in answer["operation"], answer["operation"]
    return str(answer["operation"]["location"])
