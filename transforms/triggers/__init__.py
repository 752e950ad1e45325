"""Trigger registry: every module in this package that defines `TRIGGER` is a trigger.

A new trigger is one new file: a class with the `Trigger` shape (see base.py) and a module-level
`TRIGGER = MyTrigger` (the class; it is built with the settings). Priority decides which of
several triggers firing for one customer at the same event time goes on (lower first).
"""

from __future__ import annotations

import importlib
import pkgutil

from transforms.settings import CoreSettings
from transforms.triggers.base import Trigger


def load_triggers(settings: CoreSettings) -> list[Trigger]:
    """All registered triggers, built with `settings`, in priority order."""
    found: list[Trigger] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        cls = getattr(module, "TRIGGER", None)
        if cls is not None:
            found.append(cls(settings))
    return sorted(found, key=lambda t: (t.priority, t.type))
