"""``python -m bench check``: the regression check on small subsets that CI runs.

A fixed grid, committed as data beside its reference values (``results/reference/ci/``): every
task with every strategy that applies, on small subsets, for a few rounds and epochs, one seed,
on the CPU with one thread per unit. Each metric value is compared with the committed one within
the tolerance the grid states: exact (0) on the kind of machine that made the reference, where
the computation is deterministic at a fixed thread count, and a stated tolerance on another
(other CPU kernels or library versions change the bits, and small runs amplify them). On drift
the check exits 1 with a table of what moved; ``--update`` rewrites the reference, a deliberate
change that its commit shows. The grid, the reference and ``machine.json`` are validated, and
every run planned, before anything runs: a broken file is refused (exit 2) in seconds, never
after minutes of runs, and no NaN tolerance or reference value can pass what it should not.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import tempfile
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.run.config import ConfigError, Execution, RunConfig
from bench.run.results import read_rounds_csv

GRID = Path(__file__).resolve().parents[2] / "results" / "reference" / "ci" / "grid.json"
KEYS = ["task", "strategy", "seed", "repeat", "round"]
REFERENCE_COLUMNS = KEYS + ["n_labeled", "metric", "value"]
#: The keys of a grid file, of each of its runs and of a run's tolerance.
GRID_KEYS = {"description", "threads", "jobs", "runs"}
RUN_KEYS = {"task", "strategies", "settings", "tolerance"}
TOLERANCE_KEYS = {"same_machine", "other_machine", "why"}
#: RunConfig fields the check sets for every run (``threads`` at the grid's top level).
SET_BY_CHECK = {"task", "strategies", "out", "quiet", "download", "threads", "data_root"}
LAYOUT = "see results/reference/ci/grid.json for the layout"


@dataclass
class GridRun:
    """One run of the grid: a ``bench run`` configuration and the tolerances of its values."""

    task: str
    strategies: list[str]
    settings: dict[str, Any]  # RunConfig fields: subset, rounds, initial, epochs, ...
    same_machine: float  # absolute tolerance where the reference's machine fingerprint matches
    other_machine: float  # absolute tolerance elsewhere
    why: str = ""  # why these tolerances

    def config(self, out: Path, data_root: Path | None, threads: int) -> RunConfig:
        extra = {"data_root": data_root} if data_root is not None else {}
        return RunConfig(
            task=self.task,
            strategies=self.strategies,
            out=out,
            quiet=True,
            download=False,
            threads=threads,
            **self.settings,
            **extra,
        )


@dataclass
class Grid:
    """The grid file: its runs, threads per unit and worker processes (its ``description`` is for
    readers of the file)."""

    path: Path
    runs: list[GridRun]
    threads: int = 1
    jobs: int = 2

    @classmethod
    def load(cls, path: Path) -> Grid:
        """Read and validate the grid file: every key known and of its type, tolerances finite and
        non-negative, each run's settings :class:`RunConfig` fields of their types (ConfigError
        naming the file, the run and the key)."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON
            raise ConfigError(f"cannot read the check grid {path} ({err}); {LAYOUT}") from None
        where = f"check grid {path}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} is not a JSON object but {type(raw).__name__}; {LAYOUT}")
        _known_keys(where, raw, GRID_KEYS)
        for key in ("threads", "jobs"):
            if key in raw and not (_is_int(raw[key]) and raw[key] >= 1):
                raise ConfigError(f"{where}: {key!r} is {raw[key]!r}, not a positive integer; {LAYOUT}")
        runs = raw.get("runs")
        if not isinstance(runs, list):
            raise ConfigError(f"{where}: 'runs' is {type(runs).__name__}, not a list of runs; {LAYOUT}")
        if not runs:
            raise ConfigError(f"{where} has no runs: nothing to check; {LAYOUT}")
        grid_runs = [_grid_run(f"{where}, run {i + 1}", r) for i, r in enumerate(runs)]
        tasks = [run.task for run in grid_runs]
        if len(set(tasks)) < len(tasks):
            raise ConfigError(f"{where}: a task has two runs ({', '.join(tasks)}); list its strategies in one run")
        return cls(Path(path), grid_runs, raw.get("threads", 1), raw.get("jobs", 2))

    @property
    def reference(self) -> Path:
        return self.path.with_name("reference.csv")

    @property
    def machine_file(self) -> Path:
        return self.path.with_name("machine.json")


def _grid_run(where: str, raw: Any) -> GridRun:
    """One entry of the grid's ``runs``, validated (ConfigError naming ``where`` and the key)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} is {type(raw).__name__}, not an object; {LAYOUT}")
    _known_keys(where, raw, RUN_KEYS)
    task, strategies = raw.get("task"), raw.get("strategies")
    if not isinstance(task, str):
        raise ConfigError(f"{where}: 'task' is {task!r}, not a task name; {LAYOUT}")
    where = f"{where} ({task})"
    if not (isinstance(strategies, list) and strategies and all(isinstance(s, str) for s in strategies)):
        raise ConfigError(f"{where}: 'strategies' is {type(strategies).__name__} {strategies!r}, not a list of names")
    settings, tolerance = raw.get("settings", {}), raw.get("tolerance")
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: 'settings' is {type(settings).__name__}, not an object of run settings")
    hints = typing.get_type_hints(RunConfig)
    for key, value in settings.items():
        if key in SET_BY_CHECK:
            raise ConfigError(f"{where}: setting {key!r} is set by the grid or the check, not per run; remove it")
        if key not in hints:
            known = ", ".join(sorted(set(hints) - SET_BY_CHECK))
            raise ConfigError(f"{where}: unknown setting {key!r}; the settings are those of a run: {known}")
        if not _matches(value, hints[key]):
            raise ConfigError(f"{where}: setting {key!r} is {value!r}, not {_type_name(hints[key])}")
        if not _finite(value):
            raise ConfigError(f"{where}: setting {key!r} is {value!r}, not finite; give a finite value")
    if not isinstance(tolerance, dict):
        raise ConfigError(f"{where}: 'tolerance' is {type(tolerance).__name__}, not an object; {LAYOUT}")
    _known_keys(f"{where}'s tolerance", tolerance, TOLERANCE_KEYS)
    bounds = {}
    for key in ("same_machine", "other_machine"):
        value = tolerance.get(key)
        if not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ConfigError(
                f"{where}: tolerance {key!r} is {value!r}, not a finite non-negative number (NaN or Infinity "
                f"would pass any value); give the largest absolute difference allowed, e.g. 0.0 or 10.0"
            )
        bounds[key] = float(value)
    why = tolerance.get("why", "")
    if not isinstance(why, str):
        raise ConfigError(f"{where}: tolerance 'why' is {type(why).__name__}, not a text")
    return GridRun(task, strategies, settings, bounds["same_machine"], bounds["other_machine"], why)


def _known_keys(where: str, raw: dict, known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))}); {LAYOUT}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """Whether every number in a JSON value is finite (NaN and Infinity are JSON to Python)."""
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    if isinstance(value, list):
        return all(map(_finite, value))
    return not isinstance(value, float) or math.isfinite(value)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a RunConfig field's type (an int is not a bool, a float not an int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    """A RunConfig field's type in words: ``int | None`` -> ``an integer or null``."""
    names = {int: "an integer", float: "a number", str: "a text", bool: "true or false", type(None): "null"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is dict:
        return "an object"
    if origin is list:
        return "a list"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def machine() -> dict[str, str]:
    """What decides the bits of a CPU run at a fixed thread count: torch, its CPU kernels, numpy,
    scipy (the FEM solver), the processor architecture, and the processor itself (its model and
    instruction-set flags, by which oneDNN and BLAS pick their kernels)."""
    import numpy
    import scipy

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        **processor(),
    }


def processor() -> dict[str, str]:
    """The CPU's model name and a digest of its instruction-set flags (from /proc/cpuinfo; on
    systems without it, what :func:`platform.processor` says)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu": platform.processor()}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = " ".join(sorted(fields.get("flags", "").split()))
    return {
        "cpu": fields.get("model name", platform.processor()),
        "cpu_flags": hashlib.sha256(flags.encode()).hexdigest()[:12],
    }


def run_grid(grid: Grid, data_root: Path | None, log=print) -> pd.DataFrame:
    """Run every run of ``grid`` (one after another, its units on ``grid.jobs`` workers) and
    return their rows in the reference's columns."""
    from bench.cli.runner import execute

    frames = []
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        for run in grid.runs:
            start = time.perf_counter()
            out = execute(run.config(Path(tmp) / run.task, data_root, grid.threads), Execution(jobs=grid.jobs))
            rows = read_rounds_csv(out / "rounds.csv")
            failures = json.loads((out / "manifest.json").read_text()).get("failures", [])
            if failures:
                raise ConfigError(
                    f"check grid: {run.task} had failed units ({'; '.join(f['error'] for f in failures)}); "
                    f"fix them before comparing or updating the reference"
                )
            log(f"{run.task}: {', '.join(run.strategies)}: {len(rows)} rounds in {time.perf_counter() - start:.0f} s")
            frames.append(rows[REFERENCE_COLUMNS])
    return pd.concat(frames, ignore_index=True).sort_values(KEYS).reset_index(drop=True)


def compare(grid: Grid, now: pd.DataFrame, reference: pd.DataFrame, same_machine: bool) -> pd.DataFrame:
    """The rows that drifted: a value beyond its tolerance, another labeled-set size, or a row
    missing on either side (columns: task, strategy, seed, round, reference, now, tolerance)."""
    tolerance = {r.task: (r.same_machine if same_machine else r.other_machine) for r in grid.runs}
    merged = reference.merge(now, on=KEYS, how="outer", suffixes=("_ref", "_now"), indicator=True)
    merged["tolerance"] = merged["task"].map(tolerance)
    drift = (
        (merged["_merge"] != "both")
        | (merged["n_labeled_ref"] != merged["n_labeled_now"])
        | ((merged["value_now"] - merged["value_ref"]).abs() > merged["tolerance"])
        | (merged["value_now"].isna() != merged["value_ref"].isna())
    )
    table = merged[drift].rename(columns={"value_ref": "reference", "value_now": "now"})
    return table[["task", "strategy", "seed", "round", "reference", "now", "tolerance"]]


def plan_grid(grid: Grid, data_root: Path | None) -> None:
    """Plan every run of ``grid`` as ``bench run`` would (tasks, strategies, sizes, options), so
    that a run that cannot work is refused before any other has run (ConfigError naming it)."""
    from bench.run.plan import plan_run

    for run in grid.runs:
        try:
            plan_run(run.config(Path(tempfile.gettempdir()) / "bench-check", data_root, grid.threads))
        except ConfigError as err:
            raise ConfigError(f"check grid {grid.path}, run {run.task}: {err}") from None


def read_reference(path: Path) -> pd.DataFrame:
    """The committed reference values, validated: a readable CSV with the reference's columns,
    at least one row, whole-number keys, finite values, and one row per (task, strategy, seed,
    repeat, round) (ConfigError naming the file, the line and the fix)."""
    fix = "restore it from git, or rewrite it with python -m bench check --update"
    if not path.exists():
        raise ConfigError(f"no reference at {path}; make one with python -m bench check --update")
    try:
        reference = pd.read_csv(path)
    except (OSError, ValueError) as err:  # ValueError: pandas' parser errors and undecodable bytes
        raise ConfigError(f"{path} is not a readable reference.csv ({err}); {fix}") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in reference.columns]
    if missing:
        raise ConfigError(f"{path} lacks the columns {', '.join(missing)}; {fix}")
    if reference.empty:
        raise ConfigError(f"{path} has no rows; {fix}")
    for column in ("seed", "repeat", "round", "n_labeled", "value"):
        numbers = pd.to_numeric(reference[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(numbers) if column == "value" else ~np.isfinite(numbers) | (numbers != np.round(numbers))
        if bad.any():
            i = int(bad.argmax())
            what = "a finite number" if column == "value" else "a whole number"
            raise ConfigError(f"{path} line {i + 2}: {column} {reference[column].iloc[i]!r} is not {what}; {fix}")
    for column in ("task", "strategy", "metric"):
        if reference[column].isna().any():
            raise ConfigError(
                f"{path} line {int(reference[column].isna().to_numpy().argmax()) + 2}: no {column}; {fix}"
            )
    reference = reference.astype({c: int for c in ("seed", "repeat", "round", "n_labeled")})
    again = reference.duplicated(KEYS, keep=False)
    if again.any():
        first, *rest = (int(i) + 2 for i in np.flatnonzero(again.to_numpy()))
        raise ConfigError(f"{path} line {rest[0]} repeats line {first}'s task, strategy, seed, repeat and round; {fix}")
    return reference


def read_machine(path: Path) -> dict[str, str]:
    """The machine that made the reference (``machine.json``); {} when there is none."""
    if not path.exists():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        recorded = err
    if not isinstance(recorded, dict):
        raise ConfigError(
            f"{path} is not a JSON object of the reference's machine ({recorded}); rewrite it with python -m bench "
            f"check --update, or delete it to compare within the other-machine tolerances"
        )
    return recorded


def check(grid_path: Path = GRID, update: bool = False, data_root: Path | None = None, log=print) -> int:
    """Run the grid and compare with its reference (0: no drift, 1: drift); with ``update``,
    write the new reference instead. Both files are validated, and every run planned, before
    anything runs."""
    grid = Grid.load(grid_path)
    plan_grid(grid, data_root)
    if not update:
        reference, recorded = read_reference(grid.reference), read_machine(grid.machine_file)
    start = time.perf_counter()
    now = run_grid(grid, data_root, log)
    if update:
        bad = now[~np.isfinite(now["value"].to_numpy(dtype=float))]
        if len(bad):
            rows = "; ".join(f"{r.task} {r.strategy} round {r.round}: {r.value}" for r in bad.head(5).itertuples())
            raise ConfigError(
                f"check grid {grid.path}: {len(bad)} values are not finite ({rows}); fix those runs before "
                f"updating {grid.reference}"
            )
        now.to_csv(grid.reference, index=False)
        grid.machine_file.write_text(json.dumps(machine(), indent=2) + "\n")
        log(
            f"wrote {grid.reference} ({len(now)} values) and {grid.machine_file} in {time.perf_counter() - start:.0f} s"
        )
        return 0
    same = recorded == machine()
    if not same:
        log(
            f"this machine ({machine()}) is not the reference's ({recorded}): values are compared within the "
            f"other-machine tolerances"
        )
    drift = compare(grid, now, reference, same)
    elapsed = time.perf_counter() - start
    if drift.empty:
        log(
            f"check passed: {len(now)} values as in {grid.reference} "
            f"({'exact, same kind of machine' if same else 'within the other-machine tolerances'}) in {elapsed:.0f} s"
        )
        return 0
    log(f"check FAILED: {len(drift)} of {len(now)} values drifted from {grid.reference}:")
    log(drift.to_string(index=False))
    log("if the change is deliberate, rewrite the reference with python -m bench check --update and commit it")
    return 1
