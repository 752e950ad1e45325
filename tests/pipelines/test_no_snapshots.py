"""A core built without feature snapshots (Core(snapshots=False): an engine with no feature
writer) gives every other output exactly as one that computes them: the snapshots' write-behind
wakes and the snapshots at each decision feed nothing else."""

from __future__ import annotations

from pipelines.common import build_core
from pipelines.reference import ReferenceRunner
from runners.catalog_traffic import CatalogTrafficConfig, with_catalog_changes
from runners.traffic import Malformed, Traffic, TrafficConfig
from tests.builders import T0
from transforms.model import CONSENT, FEATURES
from transforms.settings import DAY, Settings


def outputs(snapshots: bool, items: list) -> list[tuple[str, str]]:
    out: list = []
    core = build_core(Settings(), snapshots=snapshots)
    runner = ReferenceRunner(core, out.append, clock=lambda: T0 + 400 * DAY, fire_every=64)
    for item in items:
        runner.feed(item)
    runner.finish()
    return [(kind, repr(record)) for kind, record in out]


def test_outputs_but_snapshots_are_the_same_without_snapshots():
    cfg = TrafficConfig(events=5_000, customers=300, rate=2.0, seed=11,
                        duplicate_ratio=0.03, out_of_order_ms=12_000)
    items = [i for i in with_catalog_changes(Traffic(cfg), CatalogTrafficConfig(every=50))
             if not isinstance(i, Malformed)]
    full = outputs(True, items)
    bare = outputs(False, items)
    assert sum(kind == FEATURES for kind, _ in full) > 500
    assert not any(kind == FEATURES for kind, _ in bare)
    assert any(kind == CONSENT for kind, _ in bare)
    # (in another order across customers: fewer wakes, at other times)
    assert sorted(bare) == sorted(o for o in full if o[0] != FEATURES)
