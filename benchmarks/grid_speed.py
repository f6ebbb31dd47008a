"""Wall time of one run under different executors, and a check that all give the same numbers.

    python benchmarks/grid_speed.py                       # MNIST random,uncertainty x 2 repeats
    python benchmarks/grid_speed.py --task ivus --strategy all --repeats 5 --configs "jobs=1" "jobs=8"

Each configuration runs as its own ``python -m bench run`` in a subprocess (a fresh process, the
generative model from the cache), one after another; the table gives the wall time of each and
whether its ``rounds.csv`` values equal those of the first configuration with the same threads
per unit. Configurations: ``jobs=N[,threads=T]`` or ``ray[,threads=T]`` (a local Ray cluster).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

DEFAULT_CONFIGS = ["jobs=1,threads=1", "jobs=1,threads=2", "jobs=2,threads=1", "ray,threads=1"]


def flags(config: str) -> tuple[list[str], int | None]:
    """The ``run`` flags of a configuration and its threads per unit."""
    parts = dict(p.split("=") if "=" in p else (p, "") for p in config.split(","))
    out, threads = [], None
    if "ray" in parts:
        out += ["--executor", "ray"]
    if "jobs" in parts:
        out += ["--jobs", parts["jobs"]]
    if "threads" in parts:
        threads = int(parts["threads"])
        out += ["--threads", parts["threads"]]
    return out, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist")
    parser.add_argument("--strategy", default="random,uncertainty")
    parser.add_argument("--repeats", default="2")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--extra", default="", help="more run flags, e.g. '--subset 5000 --rounds 4'")
    args = parser.parse_args()
    base = ["--task", args.task, "--strategy", args.strategy, "--repeats", args.repeats, "--quiet", *args.extra.split()]
    rows, first_by_threads = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            extra, threads = flags(config)
            out = Path(tmp) / config.replace(",", "_").replace("=", "")
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bench", "run", *base, *extra, "--out", str(out)], check=True)
            wall = time.perf_counter() - start
            values = pd.read_csv(out / "rounds.csv").sort_values(["strategy", "repeat", "round"])["value"].tolist()
            first = first_by_threads.setdefault(threads, (config, values))
            rows.append(
                {
                    "configuration": config,
                    "wall_s": round(wall, 1),
                    "values equal": f"{values == first[1]} (vs {first[0]})",
                }
            )
            print(rows[-1], flush=True)
    print(f"\n{args.task}: {args.strategy} x {args.repeats} repeats {args.extra}")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
