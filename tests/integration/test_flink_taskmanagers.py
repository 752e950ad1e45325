"""`personalize services` with flink.taskmanagers=2: a cluster of its own (a temporary state
folder, free ports), both TaskManagers registered once `up` returns, `down` stops both.

It never touches the shared cluster: its ports are picked free, its processes are found by its
own state folder."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from runners import services
from runners.services._flink import Flink
from runners.services._proc import pids_with, port_open
from transforms.settings import load_settings

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_taskmanagers_come_up_registered_and_go_down_together(tmp_path: Path) -> None:
    rest, rpc = _free_port(), _free_port()
    settings = load_settings(None, {}, [
        f"paths.state_dir={tmp_path}", "flink.taskmanagers=2", "flink.task_slots=1",
        f"flink.jobmanager_port={rest}", f"flink.rpc_port={rpc}",
        "flink.jobmanager_memory=768m", "flink.taskmanager_memory=1280m",
    ])
    flink = Flink(settings)
    try:
        services.up(settings, ["flink"])
        # `up` returns only once both have registered, not with the first one.
        overview = flink.rest("/overview")
        assert overview["taskmanagers"] == 2
        assert overview["slots-total"] == 2
        assert len(flink.taskmanager_pids()) == 2
        [row] = services.status(settings, ["flink"])
        assert row.state == "running"
        assert set(flink.taskmanager_pids()) <= set(row.pids)
    finally:
        services.down(settings, ["flink"])
    assert pids_with(str(tmp_path / "flink") + "/") == []
    assert not port_open("127.0.0.1", rest)
    [row] = services.status(settings, ["flink"])
    assert row.state == "stopped"
