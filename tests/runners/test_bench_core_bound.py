"""The bound of the core bench does the core's work: same snapshots, payload ids, audit."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.common import build_core
from runners.bench.core import run_once, shipped_records
from runners.bench.core_bound import bound_run, comparable, comparable_bound, modelled
from transforms.model import AUDIT, EMAIL_OPEN, FEATURES, PAYLOAD, BehaviourEvent, event_time
from transforms.settings import Settings

KEPT = (FEATURES, PAYLOAD, AUDIT)


def test_the_bound_gives_the_cores_outputs_on_the_shipped_data() -> None:
    settings = modelled(Settings())   # the bench's: the triggers the bound does not model off
    assert not settings.core.win_back_enabled
    records = shipped_records(settings.core)
    clock = max(event_time(r) for r in records)
    outputs: list = []
    run_once(build_core(settings), records, clock, also=outputs.append)
    core = [comparable(o) for o in outputs]
    bound = [comparable_bound(o) for o in bound_run(records, settings.core, clock)]

    ours = sorted((o for o in core if o[0] in KEPT), key=repr)
    its = sorted((o for o in bound if o[0] in KEPT), key=repr)
    kinds = {kind for kind, _ in ours}
    assert kinds == set(KEPT) and len(ours) > 10_000  # snapshots, payloads and audit all there
    assert its == ours


def test_the_bound_refuses_events_it_does_not_model() -> None:
    settings = Settings()
    first = next(r for r in shipped_records(settings.core) if isinstance(r, BehaviourEvent))
    opened = dataclasses.replace(first, event_type=EMAIL_OPEN, product=None)
    with pytest.raises(ValueError, match="email_open"):
        bound_run([opened], settings.core, first.occurred_at)
