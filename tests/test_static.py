"""Static checks of the source tree, as part of the test suite: ruff (lint and import order,
configured in pyproject.toml) and mypy (types, strict where pyproject.toml says)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("transforms", "pipelines", "runners")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-cache", *PACKAGES, "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    result = _run("mypy", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr
