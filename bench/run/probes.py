"""The reproducibility probe of plug-in strategies: which units make it (:func:`is_probed`), its
outcome (:class:`Probe`, made by :class:`bench.run.loop.UnitState`), and what it found, kept in
the cache root so that ``python -m bench list`` can say whether a plug-in strategy has passed.
Keyed by the strategy's name and a digest of its module's source, so that an edited strategy
counts as unchecked again."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.paths import cache_root
from bench.run.manifest import now
from bench.run.results import write_json

log = logging.getLogger(__name__)

FILE = "reproducibility.json"


@dataclass(frozen=True)
class Probe:
    """The reproducibility probe of a plug-in strategy: its first selection made twice from the
    same state (its RNG, torch's stream and its ``state_dict`` restored in between)."""

    reproducible: bool
    detail: str  # what was compared, and how the two selections differed


def is_probed(strategy_cls: type, repeat: int) -> bool:
    """Whether a unit probes its strategy's reproducibility: a plug-in strategy (defined outside the
    built-in ``strategies`` package, whose contract tests run in CI), in repeat 0."""
    return repeat == 0 and strategy_cls.__module__.partition(".")[0] != "strategies"


def source_digest(cls: type) -> str | None:
    """A digest of the source file defining ``cls`` (None when it has none, e.g. a notebook's class)."""
    try:
        path = inspect.getsourcefile(cls)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else None
    except (OSError, TypeError):
        return None


def _read(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def record(cls: type, task: str, probe: Probe) -> None:
    """Keep ``probe``'s outcome for strategy ``cls`` on ``task``; a cache that cannot be written
    costs nothing but the record (the run's manifest has it too)."""
    path = cache_root() / FILE
    found = _read(path)
    found[cls.name] = {  # type: ignore[attr-defined]  # a Strategy class
        "module": cls.__module__,
        "source_digest": source_digest(cls),
        "task": task,
        "reproducible": probe.reproducible,
        "detail": probe.detail,
        "date": now(),
    }
    try:
        write_json(path, found)
    except OSError as err:
        log.debug("could not record the reproducibility probe in %s: %s", path, err)


def verdict(cls: type) -> dict[str, Any] | None:
    """The last probe of strategy ``cls`` as it is now (same module and source), or None."""
    entry = _read(cache_root() / FILE).get(cls.name)  # type: ignore[attr-defined]  # a Strategy class
    if not isinstance(entry, dict) or entry.get("module") != cls.__module__:
        return None
    return entry if entry.get("source_digest") == source_digest(cls) else None
