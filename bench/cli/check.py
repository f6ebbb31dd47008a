"""``python -m bench check``: the regression check on small subsets that CI runs.

A fixed grid, committed as data beside its reference values (``results/reference/ci/``): every
task with every strategy that applies, on small subsets, for a few rounds and epochs, one seed,
on the CPU with one thread per unit. Each metric value is compared with the committed one within
the tolerance the grid states: exact (0) on the kind of machine that made the reference, where
the computation is deterministic at a fixed thread count, and a stated tolerance on another
(other CPU kernels or library versions change the bits, and small runs amplify them). On drift
the check exits 1 with a table of what moved; ``--update`` rewrites the reference, a deliberate
change that its commit shows.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.run.config import ConfigError, Execution, RunConfig
from bench.run.results import read_rounds_csv

GRID = Path(__file__).resolve().parents[2] / "results" / "reference" / "ci" / "grid.json"
KEYS = ["task", "strategy", "seed", "repeat", "round"]
REFERENCE_COLUMNS = KEYS + ["n_labeled", "metric", "value"]


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
        try:
            raw = json.loads(Path(path).read_text())
            runs = [
                GridRun(
                    r["task"],
                    r["strategies"],
                    r.get("settings", {}),
                    float(r["tolerance"]["same_machine"]),
                    float(r["tolerance"]["other_machine"]),
                    r["tolerance"].get("why", ""),
                )
                for r in raw["runs"]
            ]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"cannot read the check grid {path} ({err}); see results/reference/ci/grid.json for the layout"
            ) from None
        return cls(Path(path), runs, raw.get("threads", 1), raw.get("jobs", 2))

    @property
    def reference(self) -> Path:
        return self.path.with_name("reference.csv")

    @property
    def machine_file(self) -> Path:
        return self.path.with_name("machine.json")


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


def check(grid_path: Path = GRID, update: bool = False, data_root: Path | None = None, log=print) -> int:
    """Run the grid and compare with its reference (0: no drift, 1: drift); with ``update``,
    write the new reference instead."""
    grid = Grid.load(grid_path)
    start = time.perf_counter()
    now = run_grid(grid, data_root, log)
    if update:
        now.to_csv(grid.reference, index=False)
        grid.machine_file.write_text(json.dumps(machine(), indent=2) + "\n")
        log(
            f"wrote {grid.reference} ({len(now)} values) and {grid.machine_file} in {time.perf_counter() - start:.0f} s"
        )
        return 0
    if not grid.reference.exists():
        raise ConfigError(f"no reference at {grid.reference}; make one with python -m bench check --update")
    recorded = json.loads(grid.machine_file.read_text()) if grid.machine_file.exists() else {}
    same = recorded == machine()
    if not same:
        log(
            f"this machine ({machine()}) is not the reference's ({recorded}): values are compared within the "
            f"other-machine tolerances"
        )
    drift = compare(grid, now, pd.read_csv(grid.reference), same)
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
