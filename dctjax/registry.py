"""One small registry for everything chosen by name in a config (families, representations,
models, samplers, sources, predictions).

    SAMPLERS = Registry("sampler")

    @SAMPLERS.register("heun")
    def heun(...): ...

    SAMPLERS.get("heun")          # ValueError naming the valid choices for an unknown name
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object. `kind` names what is registered in error messages ('model', 'sampler')."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """`register(name, obj)`, or `@register(name)` as a decorator; returns obj."""

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered.")
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Removes an entry (for tests that register temporary ones)."""
        self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry `name`, or a ValueError naming the valid choices."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}.")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
