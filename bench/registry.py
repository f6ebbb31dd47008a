"""A name -> factory registry filled by a decorator and by installed packages' entry points.

Modelled on timm's ``@register_model`` / ``list_models``: adding a strategy or task is one file
and one decorator; another installed package adds entries through an entry-point group.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to factories (usually classes) of one kind: ``strategy`` or ``task``."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Callable[..., T]] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@register_strategy("random")`` above a class registers it under ``name``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory)
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., T]) -> None:
        """Register ``factory`` under ``name``; a name may be registered only once."""
        if not name or name != name.strip() or "," in name:
            raise ValueError(f"invalid {self.kind} name {name!r}: use a non-empty name without commas")
        existing = self._factories.get(name)
        if existing is not None and existing is not factory:
            raise ValueError(f"{self.kind} {name!r} is already registered by {existing!r}")
        self._factories[name] = factory

    def remove(self, name: str) -> None:
        """Unregister ``name`` (e.g. a temporary entry in a test)."""
        del self._factories[name]

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._factories:
                self.add(ep.name, ep.load())

    def names(self) -> list[str]:
        """Registered names, built-ins first in registration order, then plug-ins."""
        self._load_entry_points()
        return list(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``; an unknown name raises with the known ones."""
        self._load_entry_points()
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s: {known} "
                f"(run `python -m bench list`)"
            ) from None

    def create(self, name: str, **kwargs) -> T:
        """Instantiate the entry ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
