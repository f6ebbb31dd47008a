"""A study: every strategy over a grid of settings, written as a TOML file, and its cells.

A study file names the tasks, the strategies, the repeats and the seed, and **axes**: lists of
values of run settings. The product of the axes' values gives the **cells**; each cell runs as one
ordinary run (every strategy, every repeat, paired as a run's always are) in a folder of its own,
named from its settings (:attr:`Cell.name`)::

    description = "Query size at a fixed final budget, warm and fresh starts"
    tasks = ["mnist", "ivus"]
    strategies = "all"          # every strategy that applies to each task (the default), or a list
    repeats = 3
    seed = 0

    [settings]                  # run settings every cell shares
    epochs = 5

    [axes]                      # each a list of values; every combination is a cell
    start = ["warm", "fresh"]
    query = [{increment = 20, rounds = 11}, {increment = 100, rounds = 3}]   # a linked axis

    [task.mnist]                # what applies to one task only: settings, axes, strategies
    settings = { subset = 10000 }
    axes = { imbalance = [1, 10] }

A setting is one of :data:`STUDY_KEYS` (``initial``, ``increment``, ``rounds``, ``epochs``,
``batch_size``, ``lr``, ``optimizer``, ``start``, ``augment``, ``subset``, ``imbalance``,
``validation``), an optimizer option ``optimizer.<name>``, a generative model's setting
``generative.<name>`` or a strategy option ``<strategy>.<option>`` (as ``--option`` gives it). A
**linked axis** lists tables of settings that vary together (its name is free): the query size at
a fixed final budget is ``increment`` and ``rounds`` together. A task's own setting or axis replaces the
study's setting or axis that sets the same key for that task; its other settings and axes are added
to the study's.

Refused before any work (:class:`~bench.run.config.ConfigError`, naming the file, the key and the
fix): an unknown key, an empty or non-list axis, a value listed twice, a setting given twice (in
settings and an axis, or by two axes), a value of the wrong type, and, through
:func:`~bench.run.plan.plan_run` on every cell, a setting that does not apply to a task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.run.config import ConfigError, RunConfig
from bench.run.plan import Plan, plan_run
from bench.run.recipe import OPTIMIZER_PREFIX, RECIPE_KEYS, UNSAFE, check_key, check_value, format_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same reader, as the package tomli
    import tomli as tomllib

#: The run settings a study may set (RunConfig fields) and the type of their values.
STUDY_KEYS: dict[str, type] = {
    "initial": int,
    "increment": int,
    "rounds": int,
    **RECIPE_KEYS,
    "subset": int,
    "imbalance": float,
    "validation": int,
}
#: The prefix of a study key that sets a generative model's setting (``--generative-option``).
GENERATIVE_PREFIX = "generative."
#: The keys of a study file, and of its ``[task.<name>]`` tables.
FILE_KEYS = ("description", "tasks", "strategies", "repeats", "seed", "settings", "axes", "task")
TASK_KEYS = ("strategies", "settings", "axes")
#: The longest folder name a cell may have (most file systems allow 255 bytes).
MAX_NAME = 255
KEYS_HELP = (
    f"{', '.join(STUDY_KEYS)}, optimizer.<name> (an optimizer option), generative.<name> (a generative "
    "model's setting) or <strategy>.<option> (a strategy option)"
)


@dataclass(frozen=True)
class Cell:
    """One setting of a study: a task and the value of each of its axes; it runs as one run folder.

    ``axes`` maps an axis name to the value shown for it (a scalar axis: its setting's value; a
    linked axis, several settings that vary together: them as ``key=value`` joined by ``+``);
    ``settings`` maps each run setting the axes set (``initial``, ``imbalance``, ``si.start``) to its value.
    """

    task: str
    axes: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``<task>/<key=value,...>`` over the settings (``mnist/initial=20,start=fresh``), or the
        task alone when no axis applies to it: the cell's run folder under the study folder."""
        if not self.settings:
            return self.task
        return f"{self.task}/" + ",".join(f"{key}={format_value(v)}" for key, v in self.settings.items())

    def record(self) -> dict[str, Any]:
        """What ``study.json`` holds of the cell."""
        return {"name": self.name, "task": self.task, "axes": self.axes, "settings": self.settings}


@dataclass(frozen=True)
class TaskPart:
    """What a study runs on one task: its strategies (names, or ``["all"]``), the settings every
    cell of the task shares, and its axes (name -> values; a linked axis's values are dicts)."""

    task: str
    strategies: list[str]
    settings: dict[str, Any]
    axes: dict[str, list[Any]]

    def cells(self) -> list[Cell]:
        """Every combination of the axes' values, in file order (the first axis varies slowest)."""
        cells = []
        for values in itertools.product(*self.axes.values()):
            axes, settings = {}, {}
            for axis, value in zip(self.axes, values):
                if isinstance(value, dict):
                    axes[axis] = "+".join(f"{k}={format_value(v)}" for k, v in value.items())
                    settings.update(value)
                else:
                    axes[axis] = value
                    settings[axis] = value
            cells.append(Cell(self.task, axes, settings))
        return cells


def apply_settings(config: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """``config`` with study settings applied: :data:`STUDY_KEYS` as fields, ``optimizer.*`` and
    ``generative.*`` as those options, any other dotted key as a strategy option."""
    fields = {k: v for k, v in settings.items() if k in STUDY_KEYS}
    optimizer = {k.removeprefix(OPTIMIZER_PREFIX): v for k, v in settings.items() if k.startswith(OPTIMIZER_PREFIX)}
    generative = {k.removeprefix(GENERATIVE_PREFIX): v for k, v in settings.items() if k.startswith(GENERATIVE_PREFIX)}
    strategy = {
        k: v
        for k, v in settings.items()
        if k not in STUDY_KEYS and not k.startswith((OPTIMIZER_PREFIX, GENERATIVE_PREFIX))
    }
    return dataclasses.replace(
        config,
        **fields,
        optimizer_options={**config.optimizer_options, **optimizer},
        generative_options={**config.generative_options, **generative},
        strategy_options={**config.strategy_options, **strategy},
    )


@dataclass(frozen=True)
class Study:
    """A parsed study: its name (the file's stem), description, repeats, seed and per-task parts."""

    name: str
    description: str
    repeats: int
    seed: int
    parts: list[TaskPart]

    def cells(self) -> list[Cell]:
        """Every cell of every task, tasks in file order."""
        return [cell for part in self.parts for cell in part.cells()]

    def config(self, cell: Cell, base: RunConfig) -> RunConfig:
        """The run config of ``cell``: ``base`` (how to run: device, threads, data root, quiet),
        the study's task, strategies, repeats and seed, its task's shared settings and the cell's."""
        part = next(p for p in self.parts if p.task == cell.task)
        config = dataclasses.replace(
            base, task=cell.task, strategies=list(part.strategies), repeats=self.repeats, seed=self.seed
        )
        return apply_settings(config, {**part.settings, **cell.settings})

    def plans(self, base: RunConfig) -> list[Plan]:
        """Every cell's checked plan, in cell order, before any work: a cell that cannot run is
        refused (ConfigError naming the study, the cell and what to fix)."""
        plans = []
        for cell in self.cells():
            try:
                plans.append(plan_run(self.config(cell, base)))
            except ConfigError as err:
                raise ConfigError(f"study {self.name}, cell {cell.name}: {err}; fix the study file") from None
        return plans

    def resolved(self, plans: list[Plan]) -> Study:
        """This study with ``"all"`` replaced by the strategies its :meth:`plans` chose for each
        task (so a resumed study runs the same strategies, whatever is registered by then)."""
        chosen: dict[str, list[str]] = {}
        for cell, plan in zip(self.cells(), plans):
            chosen.setdefault(cell.task, list(plan.strategy_names))
        return dataclasses.replace(self, parts=[dataclasses.replace(p, strategies=chosen[p.task]) for p in self.parts])

    def record(self) -> dict[str, Any]:
        """The study as a study file's table that :func:`parse_study` reads back to the same cells:
        every task's strategies, settings and axes spelled out (what ``study.json`` keeps)."""
        return {
            "description": self.description,
            "tasks": [part.task for part in self.parts],
            "repeats": self.repeats,
            "seed": self.seed,
            "task": {
                part.task: {"strategies": part.strategies, "settings": part.settings, "axes": part.axes}
                for part in self.parts
            },
        }


def parse_study(data: dict[str, Any], name: str, where: str) -> Study:
    """The study in ``data`` (a parsed study file; ``where`` names it in messages), its keys,
    types and axes checked; planning each cell is :meth:`Study.plans`."""
    _unknown(data, FILE_KEYS, where, "a study file has")
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ConfigError(f'{where}: tasks = {tasks!r}: list the tasks to run, e.g. tasks = ["mnist", "ivus"]')
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"{where}: a task is listed twice in tasks = {tasks!r}; list it once")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description = {description!r} is not text; write it in quotes")
    repeats, seed = data.get("repeats", 1), data.get("seed", 0)
    for key, value, least in (("repeats", repeats, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: {key} = {value!r}: give a whole number of at least {least}")
    per_task = _table(data, "task", where)
    for task in per_task:
        if task not in tasks:
            raise ConfigError(f"{where}: [task.{task}] is not among tasks = {tasks!r}; add it there or drop the table")
    settings = _settings(_table(data, "settings", where), f"{where} [settings]")
    axes = _axes(_table(data, "axes", where), f"{where} [axes]")
    strategies = _strategies(data.get("strategies", "all"), f"{where}: strategies")
    parts = []
    for task in tasks:
        own = per_task.get(task, {})
        if not isinstance(own, dict):
            raise ConfigError(f"{where}: task.{task} = {own!r} is not a table; write it as [task.{task}]")
        at = f"{where} [task.{task}]"
        _unknown(own, TASK_KEYS, at, "a task's table has")
        own_settings = _settings(_table(own, "settings", at), f"{at} settings")
        own_axes = _axes(_table(own, "axes", at), f"{at} axes")
        own_strategies = _strategies(own.get("strategies", strategies), f"{at} strategies")
        task_settings, task_axes = _inherit(settings, axes, own_settings, own_axes)
        _check_once(task_settings, task_axes, at)
        parts.append(TaskPart(task, own_strategies, task_settings, task_axes))
    study = Study(name, description, repeats, seed, parts)
    named: set[str] = set()
    for cell in study.cells():
        if len(Path(cell.name).name.encode()) > MAX_NAME:
            raise ConfigError(
                f"{where}: cell {cell.name}'s folder name is longer than {MAX_NAME} bytes; shorten its values"
            )
        if cell.name in named:  # values that differ only in type: "1" and 1
            raise ConfigError(f"{where}: two cells are both named {cell.name}; give an axis's values distinct names")
        named.add(cell.name)
    return study


def _unknown(table: dict[str, Any], known: tuple[str, ...], where: str, has: str) -> None:
    unknown = [key for key in table if key not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; {has} {', '.join(known)}")


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} = {value!r} is not a table; write it as [{key}] or {key} = {{...}}")
    return value


def _strategies(value: Any, where: str) -> list[str]:
    """A strategies entry as a list of names (``"all"`` -> ``["all"]``)."""
    if value == "all":
        return ["all"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s for s in value):
        raise ConfigError(f'{where} = {value!r}: give "all" or a list of strategy names, e.g. ["random", "snn"]')
    return list(value)


def _check_key(key: str, where: str) -> None:
    """Refuse a key that is no study setting."""
    check_key(key, where, STUDY_KEYS, f"A study sets {KEYS_HELP}")


def _settings(table: dict[str, Any], where: str) -> dict[str, Any]:
    """A settings table, each key and value checked."""
    checked = {}
    for key, value in table.items():
        _check_key(key, where)
        checked[key] = check_value(key, value, where, STUDY_KEYS)
    return checked


def _axes(table: dict[str, Any], where: str) -> dict[str, list[Any]]:
    """An axes table: each axis a non-empty list of distinct values, scalars of its setting's type,
    or (a linked axis) tables of settings, each with the same keys."""
    axes: dict[str, list[Any]] = {}
    for axis, values in table.items():
        at = f"{where}: axis {axis}"
        if not isinstance(values, list):
            raise ConfigError(f"{at} = {values!r} is not a list; write {axis} = [V1, V2, ...]")
        if not values:
            raise ConfigError(f"{at} is empty; list at least one value, or remove the axis")
        if all(isinstance(v, dict) for v in values):
            checked: list[Any] = [_settings(v, at) for v in values]
            if any(list(v) != list(checked[0]) for v in checked) or not checked[0]:
                raise ConfigError(f"{at}: a linked axis's tables must all set the same keys, in the same order")
        elif any(isinstance(v, dict) for v in values):
            raise ConfigError(f"{at}: mixes tables and values; give all values, or all tables of settings")
        else:
            _check_key(axis, where)
            checked = [check_value(axis, v, at, STUDY_KEYS) for v in values]
        if any(c in axis for c in UNSAFE):
            raise ConfigError(f"{at}: an axis's name may not hold / or \\")
        for i, value in enumerate(checked):
            if value in checked[:i]:
                raise ConfigError(f"{at}: {values[i]!r} is listed twice; list it once")
        axes[axis] = checked
    return axes


def _axis_keys(axis: str, values: list[Any]) -> list[str]:
    """The settings an axis sets: its own name, or a linked axis's keys."""
    return list(values[0]) if isinstance(values[0], dict) else [axis]


def _inherit(
    settings: dict[str, Any], axes: dict[str, list[Any]], own_settings: dict[str, Any], own_axes: dict[str, list[Any]]
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A task's settings and axes: the study's, less those a setting or axis of the task's own sets
    (an axis of the same name keeps its place), then the task's own."""
    mine = set(own_settings) | {key for axis, values in own_axes.items() for key in _axis_keys(axis, values)}
    merged_axes = {}
    for axis, values in axes.items():
        if axis in own_axes:
            merged_axes[axis] = own_axes[axis]
        elif not mine & set(_axis_keys(axis, values)):
            merged_axes[axis] = values
    merged_axes |= {axis: values for axis, values in own_axes.items() if axis not in merged_axes}
    return {**{k: v for k, v in settings.items() if k not in mine}, **own_settings}, merged_axes


def _check_once(settings: dict[str, Any], axes: dict[str, list[Any]], where: str) -> None:
    """Refuse a setting given twice: in the settings and an axis, or by two axes."""
    seen: dict[str, str] = {key: "settings" for key in settings}
    for axis, values in axes.items():
        for key in _axis_keys(axis, values):
            if key in seen:
                raise ConfigError(f"{where}: {key} is set by {seen[key]} and by axis {axis}; give it in one place")
            seen[key] = f"axis {axis}"


def _shipped() -> Any:
    """The folder of the shipped studies (installed with the package)."""
    return resources.files("bench.study").joinpath("studies")


def shipped_studies() -> dict[str, str]:
    """The shipped studies: name -> its description."""
    found = {}
    for entry in sorted(_shipped().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            found[entry.name.removesuffix(".toml")] = tomllib.loads(entry.read_text()).get("description", "")
    return found


def read_study(source: str | Path) -> tuple[Study, bytes]:
    """The study in file ``source``, or the shipped study of that name (``pitfalls``); with the
    file's bytes (the study manifest records their SHA-256). Refused (ConfigError) when neither."""
    path = Path(source)
    if path.is_file():
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read study {path} ({err.strerror or err})") from None
        where, name = f"study {path}", path.stem
    elif str(source) in shipped_studies():
        raw = _shipped().joinpath(f"{source}.toml").read_bytes()
        where, name = f"shipped study {source}", str(source)
    else:
        raise ConfigError(
            f"{source}: no such study file, and no shipped study of that name; give a TOML file or one of "
            f"{', '.join(shipped_studies())} (python -m bench study --list)"
        )
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where} is not TOML ({err}); see docs/studies.md for the format") from None
    return parse_study(data, name, where), raw


def digest(raw: bytes) -> str:
    """The SHA-256 of a study file's bytes."""
    return hashlib.sha256(raw).hexdigest()
