"""A name -> class registry filled by a decorator and by installed packages' entry points.

Modelled on timm's ``@register_model`` / ``list_models``: adding a strategy or task is one file
and one decorator; another installed package adds entries through an entry-point group. A class
has one name, its ``name`` attribute: the decorator needs no argument, and an entry point whose
name differs from its class's is left out under both names (even where the class's own decorator
registered it on import). A plug-in that fails to import or is left out so is reported once, as a
warning naming its distribution and why; everything else keeps working.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, requires, version
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0])


@dataclass(frozen=True)
class Origin:
    """Where a registered class comes from: its module and the installed distribution that
    provides it (None when it is not installed, e.g. a class defined in a script or a test)."""

    module: str
    distribution: str | None = None
    version: str | None = None
    requires: list[str] = field(default_factory=list)  # the distribution's declared dependencies

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def distribution_origin(module: str, distribution: str | None = None) -> Origin:
    """The :class:`Origin` of ``module``; its distribution found from the module's top-level
    package unless given (an entry point knows its own)."""
    if distribution is None:
        candidates = _distributions_of_packages().get(module.partition(".")[0], [])
        distribution = candidates[0] if len(set(candidates)) == 1 else None
    if distribution is None:
        return Origin(module)
    try:
        return Origin(module, distribution, version(distribution), list(requires(distribution) or []))
    except PackageNotFoundError:
        return Origin(module, distribution)


class Registry(Generic[T]):
    """Maps names to classes of one kind (``strategy`` or ``task``); a class's name is its
    ``name`` attribute."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Callable[..., T]] = {}
        self._distributions: dict[str, str] = {}  # name -> distribution, for entry points
        self.broken: dict[str, str] = {}  # entry-point name -> why it was left out
        self._aliases: dict[str, str] = {}  # a left-out class's own name -> its entry point's name
        self._entry_points_loaded = False

    def register(self, arg: str | Callable[..., T] | None = None):
        """Decorator: ``@register_strategy`` above a class registers it under its ``name``.
        ``@register_strategy("x")`` also works, and checks that the class's name is ``"x"``."""
        if callable(arg):
            self.add(name_of(arg, self.kind), arg)
            return arg

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(arg if arg is not None else name_of(factory, self.kind), factory)
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., T]) -> None:
        """Register ``factory`` under ``name``, which must be its ``name``. A name is registered
        once; the same class defined again (a module reloaded, a notebook cell re-run) replaces it."""
        if not isinstance(name, str) or not name or name != name.strip() or "," in name:
            raise ValueError(f"invalid {self.kind} name {name!r}: use a non-empty name without commas")
        own = name_of(factory, self.kind)
        if own != name:
            raise ValueError(
                f"{self.kind} {factory.__qualname__} is named {own!r} (its `name`) but was "
                f"registered as {name!r}; a {self.kind} has one name: register it as {own!r}"
            )
        existing = self._factories.get(name)
        if existing is not None and existing is not factory and _qualified(existing) != _qualified(factory):
            raise ValueError(
                f"{self.kind} {name!r} is already registered by {_qualified(existing)}; "
                f"{_qualified(factory)} needs another name"
            )
        self._factories[name] = factory

    def remove(self, name: str) -> None:
        """Unregister ``name`` (e.g. a temporary entry in a test)."""
        del self._factories[name]
        self._distributions.pop(name, None)

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Within the block, registrations are temporary: the registry is restored afterwards."""
        self._load_entry_points()
        saved = dict(self._factories), dict(self._distributions)
        try:
            yield self
        finally:
            self._factories, self._distributions = saved

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            distribution = getattr(ep, "dist", None)
            dist = distribution.name if distribution is not None else None
            if ep.name in self._factories:  # its module was imported (and registered) first
                if dist and self._factories[ep.name].__module__ == ep.module:
                    self._distributions[ep.name] = dist
                continue
            where = f"{dist} {distribution.version}" if distribution is not None else ep.value
            try:
                factory = ep.load()
            except Exception as err:  # a broken plug-in must not take the others down
                self._leave_out(ep, where, f"it failed to import ({type(err).__name__}: {err})")
                continue
            why = self._refusal(ep.name, factory)
            if why is not None:
                self._leave_out(ep, where, why)
                own = getattr(factory, "name", None)
                if isinstance(own, str) and self._factories.get(own) is factory:  # its decorator ran on import
                    del self._factories[own]
                    self._aliases[own] = ep.name
                continue
            try:
                self.add(ep.name, factory)
            except ValueError as err:  # e.g. its name is taken by another class
                self._leave_out(ep, where, str(err))
                continue
            if dist:
                self._distributions[ep.name] = dist

    def _refusal(self, name: str, factory: Callable[..., T]) -> str | None:
        """Why the entry point ``name`` cannot register ``factory``, or None when it can."""
        try:
            own = name_of(factory, self.kind)
        except ValueError as err:
            return str(err)
        if own != name:
            return (
                f"its class {factory.__qualname__} is named {own!r} (its `name`) but its entry point "
                f"{name!r}; a {self.kind} has one name: name the entry point {own!r} (or the class {name!r})"
            )
        return None

    def _leave_out(self, ep: Any, where: str, why: str) -> None:
        """Record and report, once, that the entry point ``ep`` is left out and ``why``."""
        self.broken[ep.name] = f"from {where} ({ep.value}): {why}"
        log.warning(
            "left out the %s plug-in %r from %s (entry point %s = %s): %s",
            self.kind,
            ep.name,
            where,
            self.entry_point_group,
            ep.value,
            why,
        )

    def names(self) -> list[str]:
        """Registered names, built-ins first in registration order, then plug-ins."""
        self._load_entry_points()
        return list(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The class registered under ``name``; an unknown name raises with the known ones."""
        self._load_entry_points()
        try:
            return self._factories[name]
        except KeyError:
            entry = self._aliases.get(name, name)
            if entry in self.broken:
                raise UnknownNameError(
                    f"the {self.kind} plug-in {entry!r} was left out {self.broken[entry]}; fix or uninstall it"
                ) from None
            known = ", ".join(self.names()) or "(none)"
            plural = self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered {plural}: {known} (run `python -m bench list`)"
            ) from None

    def create(self, name: str, **kwargs) -> T:
        """Instantiate the entry ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def origin(self, name: str) -> Origin:
        """Where the class registered as ``name`` comes from (for the run manifest)."""
        factory = self.get(name)
        return distribution_origin(factory.__module__, self._distributions.get(name))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@functools.lru_cache(maxsize=1)
def _distributions_of_packages() -> dict[str, list[str]]:
    return dict(packages_distributions())


def name_of(factory: Callable[..., Any], kind: str) -> str:
    """A class's registry name: its ``name`` attribute (which it must have)."""
    name = getattr(factory, "name", None)
    if not isinstance(name, str):
        raise ValueError(
            f"{kind} {getattr(factory, '__qualname__', factory)!r} has no `name`: set the class "
            f'attribute name = "..." (its registry name)'
        )
    return name


def _qualified(factory: Callable[..., Any]) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"
