"""Several TaskManagers on one host (flink.taskmanagers) and the scale-out bench's own parts:
its CPU accounting over process trees, its arguments, its place in `personalize bench`. The
cluster itself: tests/integration/test_flink_taskmanagers.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runners.bench import DEFAULT_SCENARIOS, OPT_IN, SCENARIOS, flink_scale
from runners.cli import build_parser
from runners.services._flink import RANDOM_PORTS, Flink
from runners.services._proc import ServiceError
from transforms.settings import load_settings

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _settings(tmp_path: Path, *pairs: str):
    return load_settings(None, {}, [f"paths.state_dir={tmp_path}", *pairs])


def _conf(flink: Flink) -> tuple[list[str], dict]:
    workers = (flink.conf / "workers").read_text().splitlines()
    return workers, yaml.safe_load((flink.conf / "config.yaml").read_text())


# --- the cluster's configuration --------------------------------------------------------------


def test_default_is_one_taskmanager(tmp_path: Path) -> None:
    flink = Flink(_settings(tmp_path))
    flink._write_conf()
    workers, config = _conf(flink)
    assert workers == ["localhost"]
    assert config["taskmanager.numberOfTaskSlots"] == 2


def test_n_taskmanagers_are_n_workers_lines_with_their_own_slots(tmp_path: Path) -> None:
    flink = Flink(_settings(tmp_path, "flink.taskmanagers=3", "flink.task_slots=1",
                            "flink.jobmanager_port=8091", "flink.rpc_port=6133"))
    flink._write_conf()
    workers, config = _conf(flink)
    assert workers == ["localhost"] * 3
    assert config["taskmanager.numberOfTaskSlots"] == 1
    assert config["rest.port"] == 8091 and config["jobmanager.rpc.port"] == 6133
    # Every other port is Flink's "any free port", so a second cluster on the host cannot clash.
    assert not set(RANDOM_PORTS) & set(config)
    # Its folders are this state folder's, not the default cluster's.
    assert config["io.tmp.dirs"].startswith(str(tmp_path))
    assert flink.env()["FLINK_PID_DIR"].startswith(str(tmp_path))
    assert flink.env()["FLINK_LOG_DIR"].startswith(str(tmp_path))


@pytest.mark.parametrize("pair", ["flink.taskmanagers=0", "flink.taskmanagers=-1",
                                  "flink.task_slots=0"])
def test_no_taskmanager_or_no_slot_is_refused_before_anything_starts(
        tmp_path: Path, pair: str) -> None:
    flink = Flink(_settings(tmp_path, pair))
    with pytest.raises(ServiceError, match="at least 1"):
        flink._write_conf()
    assert not (flink.conf / "workers").exists()


def test_start_timeout_grows_with_the_taskmanagers(tmp_path: Path) -> None:
    one = Flink(_settings(tmp_path)).start_timeout
    three = Flink(_settings(tmp_path, "flink.taskmanagers=3")).start_timeout
    assert three == one + 2 * 60.0


# --- CPU accounting ---------------------------------------------------------------------------


def test_cpu_seconds_counts_a_process_and_its_descendants() -> None:
    # A shell whose child burns 0.4 s of CPU: the root's own CPU is nearly 0.
    code = BUSY.format(s=0.4) + "time.sleep(30)\n"
    root = subprocess.Popen(["/bin/sh", "-c", f'{sys.executable} -c "$0"; sleep 30', code])
    try:
        deadline = time.monotonic() + 60
        seen = 0.0
        while time.monotonic() < deadline:
            seen = flink_scale.cpu_seconds([root.pid]) or 0.0
            if seen >= 0.35:
                break
            time.sleep(0.2)
        assert 0.35 <= seen < 5.0
    finally:
        root.kill()
        root.wait()


def test_cpu_seconds_of_no_live_process_is_none() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert flink_scale.cpu_seconds([done.pid]) is None
    assert flink_scale.cpu_seconds([]) is None


# --- the command ------------------------------------------------------------------------------


def test_help_names_the_layout_that_scales(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        flink_scale.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "flink.taskmanagers=2" in out and "--parallelism" in out


@pytest.mark.parametrize("argv", [
    ["--parallelism", "0,2"],
    ["--parallelism", ","],
    ["--parallelism", "1,4", "--partitions", "2"],   # fewer partitions than subtasks
    ["--events", "19"],                              # no 5 % run left
])
def test_arguments_that_cannot_measure_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        flink_scale.main(argv)
    assert exit_.value.code == 2


def test_no_cluster_at_the_port_is_an_error_before_producing(tmp_path: Path) -> None:
    # Nothing listens on this state folder's port 1: no topic is created, nothing is run.
    settings = _settings(tmp_path, "flink.jobmanager_port=1")
    with pytest.raises(ServiceError, match="no healthy cluster"):
        flink_scale.scale(settings, say=lambda _: None)


def test_scale_is_a_bench_choice_but_not_in_the_default_run() -> None:
    assert "flink_scale" in SCENARIOS and "flink_scale" in OPT_IN
    assert "flink_scale" not in DEFAULT_SCENARIOS
    assert set(DEFAULT_SCENARIOS) | OPT_IN == set(SCENARIOS)
    args = build_parser().parse_args(["bench"])
    assert args.only.split(",") == list(DEFAULT_SCENARIOS)


def test_bench_rows_compare_p2_with_p1_and_only_the_topology_has_the_target() -> None:
    def run(eps: float | None, cpu: float | None, tms: int) -> dict:
        return {"records": 1000, "eps": eps, "cpu_us": cpu, "taskmanagers_used": tms}

    result = {"layout": {"taskmanagers": 2, "slots_per_taskmanager": [1, 1]},
              "execution_mode": "thread", "partitions": 4, "cpus": 2,
              "load_average_start": [1.0, 1.0, 1.0], "load_average_end": [2.0, 2.0, 2.0],
              "topology_p1": run(1000.0, 500.0, 1), "topology_p2": run(1500.0, 550.0, 2),
              "floor_p1": run(10_000.0, 50.0, 1), "floor_p2": run(None, 60.0, 2)}
    rows = {(r.metric.split(" ")[0], r.unit): r for r in flink_scale.outcome(result).rows}
    topology = rows[("topology", "records/s")]
    assert topology.ratio == 1.5 and topology.passed is False     # 1.5 < 1.6
    assert "2 TaskManager(s)" in topology.note
    assert rows[("topology", "us")].ratio == 1.1
    floor = rows[("floor", "records/s")]
    assert floor.target is None and floor.ratio is None            # no rate: no ratio
