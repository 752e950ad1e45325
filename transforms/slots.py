"""A state class pickled as a plain tuple in slot order (engines pickle state on every write;
slot names would be most of a small state's bytes)."""

from __future__ import annotations

from typing import Any


class SlotTuple:
    """Mix in before defining `__slots__`: pickles as the tuple of the slots' values."""

    __slots__ = ()

    def __getstate__(self) -> tuple[Any, ...]:
        names: tuple[str, ...] = self.__slots__
        return tuple([getattr(self, name) for name in names])

    def __setstate__(self, values: tuple[Any, ...]) -> None:
        names: tuple[str, ...] = self.__slots__
        for name, value in zip(names, values, strict=True):
            setattr(self, name, value)
