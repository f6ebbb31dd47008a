"""Wall time of a small study against the same runs started one by one, in one process.

    BENCH_DATA=../shared/data python benchmarks/study_overhead.py            # MNIST, 4 cells
    python benchmarks/study_overhead.py --trials 4

The study (``STUDY`` below: MNIST on a 3,000-sample subset, random and uncertainty, 2 repeats,
initial 50 or 100 x warm or fresh starts: 4 cells) runs through :func:`bench.cli.study.start`;
the same cells' runs run through :func:`bench.cli.runner.execute`, the driver ``run`` uses, one
after another. Both in this process, on one thread, after a warm-up run that loads the data, in
turns (which goes first alternates by trial); each trial in a new temporary folder. Besides the
two wall times, the time the study spends outside its cells' runs (planning every cell first,
``study.json``, the study report) is measured directly: the study's wall time less the time spent
in :func:`bench.cli.runner.finish`, which runs a cell. Both give the same numbers (checked: every
cell's ``rounds.csv`` values equal).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench.cli import study as study_command
from bench.cli.runner import execute
from bench.paths import default_data_root
from bench.run.config import Execution, RunConfig
from bench.study.spec import read_study

STUDY = """
description = "study-driver overhead: MNIST subset, 4 small cells"
tasks = ["mnist"]
strategies = ["random", "uncertainty"]
repeats = 2
seed = 0

[settings]
subset = 3000
epochs = 2
increment = 50
rounds = 3

[axes]
initial = [50, 100]
start = ["warm", "fresh"]
"""


def values(folder: Path) -> list[float]:
    """Every cell's metric values, in a fixed order."""
    keys = ["strategy", "repeat", "round"]
    found = []
    for path in sorted(folder.rglob("rounds.csv")):
        found += pd.read_csv(path).sort_values(keys)["value"].tolist()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = RunConfig(task="", strategies=[], threads=1, quiet=True, data_root=default_data_root())
    times: dict[str, list[float]] = {"study": [], "runs one by one": [], "study outside its runs": []}
    in_cells: list[float] = []
    finish = study_command.finish

    def timed_finish(*args, **kwargs):
        began = time.perf_counter()
        try:
            return finish(*args, **kwargs)
        finally:
            in_cells.append(time.perf_counter() - began)

    study_command.finish = timed_finish
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.toml"
        path.write_text(STUDY)
        study, _ = read_study(path)
        cells = study.cells()
        execute(dataclasses.replace(study.config(cells[0], base), out=Path(tmp) / "warm-up"))
        for trial in range(args.trials):
            folder, runs = Path(tmp) / f"study-{trial}", Path(tmp) / f"runs-{trial}"
            for what in ("study", "runs one by one") if trial % 2 == 0 else ("runs one by one", "study"):
                began = time.perf_counter()
                if what == "study":
                    in_cells.clear()
                    study_command.start(path, folder, base, Execution())
                    times["study outside its runs"].append(time.perf_counter() - began - sum(in_cells))
                else:
                    for cell in cells:
                        execute(dataclasses.replace(study.config(cell, base), out=runs / cell.name))
                times[what].append(time.perf_counter() - began)
            assert values(folder) == values(runs), "the study and the runs gave different numbers"
    print(f"{len(cells)} cells x 2 strategies x 2 repeats, MNIST subset 3000, 1 thread, {args.trials} trials")
    for name, seconds in times.items():
        shown = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"{name:>22}: median {statistics.median(seconds):.2f} s ({shown})")


if __name__ == "__main__":
    main()
