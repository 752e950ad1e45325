"""Operational entry points: the `personalize` CLI (runners/cli.py) and what it runs."""

from pathlib import Path

# The public clickstream sample shipped beside the repository (see shared/data/README.md): the
# demo's default input, and the real data of the benchmarks and the tests.
SHIPPED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rees46-2019-Oct-head.csv"
