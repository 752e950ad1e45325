"""Exactly once through a TaskManager crash: while the cluster job is processing, its
TaskManager is killed (SIGKILL, by pid); a new one is started, the job restarts from its last
checkpoint, and a read_committed consumer finds every expected payload on the output topic
exactly once (0 lost, 0 duplicated). Expected = the reference runner's payloads."""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import time

import pytest

from pipelines import reference
from runners.flink_cluster import submit_to_cluster
from runners.services._flink import flink_home
from runners.services._proc import cmdline
from tests.builders import HOUR, SECOND, T0, add, profile, view
from tests.pipelines.test_flink_pipeline import consume, kafka_settings, produce
from transforms.codec import decode_payload

pytestmark = pytest.mark.integration

CUSTOMERS = 4000            # enough work that two checkpoints complete well before the read ends
STEP = 4 * SECOND           # one customer's cart per STEP of event time: deadlines fire all along


def workload(tag: str) -> list:
    """Profiles, then every customer views and adds to cart (and leaves), in time order."""
    ids = [f"{tag}-{i:05d}" for i in range(CUSTOMERS)]
    items: list = [profile(T0 - HOUR, cid=c, email=f"{c}@example.com") for c in ids]
    for i, c in enumerate(ids):
        t = T0 + i * STEP
        items += [view(t, f"p{i % 50}", "shoes", cid=c), add(t + SECOND, f"p{i % 50}", cid=c)]
    return items


def _taskmanagers(cluster) -> list[int]:
    return [pid for pid in cluster.pids() if "TaskManagerRunner" in cmdline(pid)]


def _completed_checkpoints(cluster, job_id: str) -> int:
    try:
        return int(cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"])
    except (OSError, KeyError, ValueError):
        return 0


def test_a_killed_taskmanager_loses_and_duplicates_no_payload(kafka, flink_cluster, tmp_path):
    s = kafka_settings(kafka, **{"flink.checkpoint_interval": "1s"})
    tag = s.kafka.group_id
    items = workload(tag)
    reference.run_replay(items, s, tmp_path / "ref")  # the job's settings: no holdout
    expected = sorted(json.loads(line)["message_id"]
                      for line in (tmp_path / "ref" / "payloads.jsonl").open())
    assert len(expected) == CUSTOMERS
    n = produce(s, items, partitions=1)
    options = argparse.Namespace(runner="flink-cluster", max_events=n, from_beginning=True,
                                 until_idle=None, savepoint=None, detached=True, job_name=tag)
    job_id = submit_to_cluster(s, options)
    try:
        deadline = time.monotonic() + 240
        while _completed_checkpoints(flink_cluster, job_id) < 2:
            assert time.monotonic() < deadline, "no checkpoint completed in time"
            assert flink_cluster.rest(f"/jobs/{job_id}")["state"] in ("RUNNING", "CREATED",
                                                                      "INITIALIZING")
            time.sleep(0.5)
        # Mid-stream: the bounded read has not reached its end, yet state was checkpointed.
        assert flink_cluster.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
        victims = _taskmanagers(flink_cluster)
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        subprocess.run(["bash", str(flink_home() / "bin" / "taskmanager.sh"), "start"],
                       env=flink_cluster.env(), check=True, capture_output=True, timeout=60)
        assert flink_cluster.wait_job(job_id, timeout=420) == "FINISHED"
        history = flink_cluster.rest(f"/jobs/{job_id}/exceptions")
        assert history.get("exceptionHistory", {}).get("entries"), "the job never failed over"
    finally:
        flink_cluster.cancel(job_id)
    got = [decode_payload(r.value).message_id for r in consume(s, s.kafka.payloads_topic, 5000)]
    duplicated = [m for m, k in collections.Counter(got).items() if k > 1]
    lost = sorted(set(expected) - set(got))
    assert (len(lost), len(duplicated)) == (0, 0)
    assert sorted(got) == expected
