"""What ``run --track mlflow`` costs a run: the same small MNIST run with and without tracking into
a local file store, alternating, and the tracker's own time measured inside the driver.

    BENCH_DATA=../shared/data python benchmarks/tracking_overhead.py [--trials 3]

Each trial runs random and coreset, 2 repeats of 6 rounds on a 2,000-sample subset (1 epoch a
round, one thread), once untracked and once tracked, in a new folder each time; it prints the
median wall time of each, and the seconds the tracker's calls took in the tracked runs (start,
events, finish), summed over the run. Both runs give the same ``rounds.csv`` values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from bench.cli.main import main as cli  # noqa: E402
from bench.run import tracking  # noqa: E402

RUN = ["run", "--task", "mnist", "--strategy", "random,coreset", "--repeats", "2", "--subset", "2000"]
RUN += ["--initial", "50", "--increment", "50", "--rounds", "6", "--epochs", "1", "--threads", "1", "--quiet"]
RUN += ["--device", "cpu"]


def timed_tracker() -> list[float]:
    """Wrap the Tracker's start, on_event and finish so that their time adds up in the list returned."""
    spent: list[float] = []
    for name in ("start", "on_event", "finish"):
        method = getattr(tracking.Tracker, name)

        def wrapper(self, *args, _method=method, **kwargs):
            begin = time.perf_counter()
            try:
                return _method(self, *args, **kwargs)
            finally:
                spent.append(time.perf_counter() - begin)

        setattr(tracking.Tracker, name, wrapper)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    spent = timed_tracker()
    walls: dict[str, list[float]] = {"untracked": [], "tracked": []}
    tracker_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "mlruns"
        for trial in range(args.trials):
            outs = {}
            for kind in ("untracked", "tracked"):
                out = Path(tmp) / f"{kind}-{trial}"
                extra = ["--track", "mlflow", "--track-uri", str(store)] if kind == "tracked" else []
                spent.clear()
                begin = time.perf_counter()
                assert cli([*RUN, "--out", str(out), *extra]) == 0
                walls[kind].append(time.perf_counter() - begin)
                if kind == "tracked":
                    tracker_s.append(sum(spent))
                outs[kind] = pd.read_csv(out / "rounds.csv")["value"]
            assert outs["untracked"].equals(outs["tracked"]), "tracking changed a value"
    for kind, times in walls.items():
        print(f"{kind}: median {statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"the tracker's calls: median {statistics.median(tracker_s):.2f} s a run (24 rounds, 4 units, 1 parent)")


if __name__ == "__main__":
    main()
