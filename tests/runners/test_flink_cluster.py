"""The cluster job's arguments (pure)."""

from __future__ import annotations

import argparse

from pipelines import flink_job
from runners.flink_cluster import job_args
from transforms.settings import Settings


def test_the_cluster_job_gets_back_every_setting_and_the_read():
    s = Settings().with_overrides(["core.cart_delay=2h", "kafka.events_topic=x",
                                   "flink.parallelism=3"])
    options = argparse.Namespace(max_events=7, until_idle=None, from_beginning=True,
                                 savepoint="file:///sp", group_id="g", feature_store=False,
                                 job_name="j")
    args = flink_job.parse(job_args(s, options))
    assert flink_job.load_settings(None, {}, args.overrides) == s
    assert (args.max_events, args.from_beginning, args.savepoint, args.group_id, args.job_name) \
        == (7, True, "file:///sp", "g", "j")
