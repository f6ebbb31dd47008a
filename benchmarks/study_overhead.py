"""Wall time of a small study against the same runs started one by one, in one process.

    BENCH_DATA=../shared/data python benchmarks/study_overhead.py            # MNIST, 4 cells
    python benchmarks/study_overhead.py --trials 3

The study (``STUDY`` below: MNIST on a 3,000-sample subset, random and uncertainty, 2 repeats,
initial 50 or 100 x warm or fresh starts: 4 cells) runs through :func:`bench.cli.study.start`;
the same cells' runs run through :func:`bench.cli.runner.execute`, the driver ``run`` uses, one
after another. Both in this process, on one thread, alternating, after a warm-up run that loads
the data; each trial in a new temporary folder. The difference is what the study driver adds:
planning every cell first, ``study.json`` and the study report. Both give the same numbers
(checked: every cell's ``rounds.csv`` values equal).
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

from bench.cli.runner import execute
from bench.cli.study import start
from bench.paths import default_data_root
from bench.run.config import Execution, RunConfig
from bench.study.report import write_study_report
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
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = RunConfig(task="", strategies=[], threads=1, quiet=True, data_root=default_data_root())
    times: dict[str, list[float]] = {"study": [], "runs one by one": [], "its study report": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.toml"
        path.write_text(STUDY)
        study, _ = read_study(path)
        cells = study.cells()
        execute(dataclasses.replace(study.config(cells[0], base), out=Path(tmp) / "warm-up"))
        for trial in range(args.trials):
            folder = Path(tmp) / f"study-{trial}"
            began = time.perf_counter()
            start(path, folder, base, Execution())
            times["study"].append(time.perf_counter() - began)
            began = time.perf_counter()  # the report the study wrote at its end, written again: its share
            write_study_report(folder, cells)
            times["its study report"].append(time.perf_counter() - began)
            runs = Path(tmp) / f"runs-{trial}"
            began = time.perf_counter()
            for cell in cells:
                execute(dataclasses.replace(study.config(cell, base), out=runs / cell.name))
            times["runs one by one"].append(time.perf_counter() - began)
            assert values(folder) == values(runs), "the study and the runs gave different numbers"
    print(f"{len(cells)} cells x 2 strategies x 2 repeats, MNIST subset 3000, 1 thread, {args.trials} trials")
    for name, seconds in times.items():
        shown = ", ".join(f"{s:.1f}" for s in seconds)
        print(f"{name:>16}: median {statistics.median(seconds):.1f} s ({shown})")
    extra = statistics.median(times["study"]) - statistics.median(times["runs one by one"])
    report = statistics.median(times["its study report"])
    print(f"{'difference':>16}: {extra:+.1f} s; without the study report: {extra - report:+.1f} s")


if __name__ == "__main__":
    main()
