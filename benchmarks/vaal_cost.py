"""VAAL's cost per round on each task's whole pool: the seconds its ``select`` takes (training its
VAE and discriminator, then scoring the unlabeled pool), the first selection (``first_steps``
iterations, nets built) and a later one (``steps`` iterations, warm), at the task's protocol
sizes (initial labeled set, increment k).

    python benchmarks/vaal_cost.py [--tasks mnist ivus cifar10] [--threads 1] [--data ../shared/data]

VAAL uses the pool's inputs only (never F), so F here is an untrained stand-in and no task model is
trained; the selection runs through the harness's ``selection_context`` as in a run. In a run this
time is what ``rounds.csv`` reports as ``select_s``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout that is not installed

from bench.run.loop import selection_context  # noqa: E402
from strategies.vaal import VAAL  # noqa: E402
from tasks import TASKS  # noqa: E402


def measure(task_name: str, data_root: Path) -> dict[str, float]:
    """Seconds of VAAL's first and second selection on ``task_name``'s pool."""
    task = TASKS.get(task_name)()
    task.progress = False  # as under --quiet
    data = task.load(data_root, download=False)
    protocol = task.protocol
    rng = np.random.default_rng(0)
    labeled = rng.choice(len(data.pool_x), size=protocol.initial, replace=False)
    strategy = VAAL()
    seconds = []
    for t in (1, 2):
        train_x, train_y = data.pool_x[torch.as_tensor(labeled)], data.pool_y[torch.as_tensor(labeled)]
        context = selection_context(task, task.make_model(), data.pool_x, labeled, train_x, train_y, rng, t)
        start = time.perf_counter()
        picks = strategy.select(context, protocol.increment).indices
        seconds.append(time.perf_counter() - start)
        labeled = np.concatenate([labeled, picks])
    return {"pool": len(data.pool_x), "k": protocol.increment, "first_s": seconds[0], "later_s": seconds[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist", "ivus", "cifar10"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"VAAL's select per round with its default options, {args.threads} thread(s)")
    print("| task | pool | k | first selection (300 iterations) s | later selection (100 iterations) s |")
    print("|---|---|---|---|---|")
    for name in args.tasks:
        r = measure(name, args.data)
        print(f"| {name} | {r['pool']:,} | {r['k']} | {r['first_s']:.1f} | {r['later_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
