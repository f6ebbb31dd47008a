"""Wall time of the study report (:func:`bench.study.report.write_study_report`) on a synthetic study.

    python benchmarks/study_report.py [--cells 100] [--strategies 4] [--repeats 3] [--rounds 10] [--times 3]

Writes ``--cells`` synthetic run folders into a temporary study folder (two axes, ``initial`` and
``imbalance``, over as many values as the cells need; each run ``--strategies`` strategies x
``--repeats`` repeats x ``--rounds`` rounds of random accuracies, a minimal manifest and a
``table.md``, so that no run's own report is drawn, as in a finished study), then times the
report ``--times`` times (each rewrites the same files) and prints the best and median wall time
and the CPU time of the best. Set ``OMP_NUM_THREADS=1`` for the one-core figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from bench.study.report import write_study_report  # noqa: E402
from bench.study.spec import Cell  # noqa: E402

METRIC = {"name": "accuracy", "higher_is_better": True, "label": "test accuracy (%)", "display_scale": 100.0}


def synthetic_cells(folder: Path, cells: int, strategies: int, repeats: int, rounds: int) -> list[Cell]:
    """``cells`` run folders under ``folder``, each with ``rounds.csv``, ``manifest.json`` and ``table.md``."""
    rng = np.random.default_rng(0)
    names = ["random", "uncertainty", "badge", "coreset", "typiclust", "lcmd", "vaal", "snn"][:strategies]
    names += [f"s{k}" for k in range(len(names), strategies)]
    imbalances = [1, 10, 100, 1000]
    out = []
    for k in range(cells):
        settings = {"initial": 20 * (1 + k // len(imbalances)), "imbalance": imbalances[k % len(imbalances)]}
        cell = Cell("mnist", dict(settings), settings)
        run = folder / cell.name
        run.mkdir(parents=True)
        skill = rng.normal(0.0, 0.01, strategies)
        base = 0.5 + 0.4 * (1 - np.exp(-np.arange(1, rounds + 1) / 4))  # a learning curve
        rows = [
            dict(
                task="mnist",
                strategy=name,
                repeat=r,
                seed=r,
                round=t + 1,
                n_labeled=settings["initial"] * (t + 1),
                metric="accuracy",
                value=float(base[t] + skill[s] + rng.normal(0.0, 0.01)),
                train_s=0.0,
                select_s=0.0,
                label_s=0.0,
            )
            for s, name in enumerate(names)
            for r in range(repeats)
            for t in range(rounds)
        ]
        pd.DataFrame(rows).to_csv(run / "rounds.csv", index=False)
        manifest = {"status": "complete", "task": "mnist", "metric": METRIC, "protocol": {"rounds": rounds}}
        (run / "manifest.json").write_text(json.dumps({**manifest, "config": {}}))
        (run / "table.md").write_text("synthetic run\n")
        out.append(cell)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--strategies", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--times", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cells = synthetic_cells(folder, args.cells, args.strategies, args.repeats, args.rounds)
        walls, cpus = [], []
        for _ in range(args.times):
            wall, cpu = time.perf_counter(), time.process_time()
            written = write_study_report(folder, cells)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        best = int(np.argmin(walls))
        print(
            f"study report of {args.cells} cells ({args.strategies} strategies x {args.repeats} repeats x "
            f"{args.rounds} rounds each): best {walls[best]:.2f} s wall ({cpus[best]:.2f} s CPU), median "
            f"{statistics.median(walls):.2f} s over {args.times} reports; {len(written)} files written"
        )


if __name__ == "__main__":
    main()
