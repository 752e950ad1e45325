"""Trigger registry: every module in this package that defines `TRIGGER` is a trigger.

A new trigger is one new file: a class with the `Trigger` shape (see base.py) and a module-level
`TRIGGER = MyTrigger` (the class; it is built with the settings). A trigger with an `enabled`
attribute that is False (its `<type>_enabled` setting) is not loaded. Priority decides which of
several triggers firing for one customer at the same event time goes on: the order of the
setting `core.trigger_priority`, then types it does not list, by name (`priorities`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from transforms.settings import CoreSettings
from transforms.triggers.base import Trigger


def load_triggers(settings: CoreSettings) -> list[Trigger]:
    """All registered, enabled triggers, built with `settings`, in priority order."""
    found: list[Trigger] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        cls = getattr(module, "TRIGGER", None)
        if cls is not None:
            trigger = cls(settings)
            if getattr(trigger, "enabled", True):
                found.append(trigger)
    rank = priorities(settings, [t.type for t in found])
    return sorted(found, key=lambda t: rank[t.type])


def priorities(settings: CoreSettings, types: Iterable[str]) -> dict[str, int]:
    """Trigger type -> rank (lower goes first): the listed types of `core.trigger_priority` in
    its order, then `types` it does not list, by name. policy.decide ranks a type missing here
    after all of these, by name."""
    listed = [t.strip() for t in settings.trigger_priority.split(",") if t.strip()]
    rank = {t: i for i, t in enumerate(dict.fromkeys(listed))}
    for t in sorted(set(types) - set(rank)):
        rank[t] = len(rank)
    return rank
