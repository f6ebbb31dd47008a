"""Selection speed of the baselines on the full MNIST pool (targets: core-set <= 2 s for 500 picks
from 60,000 x 500 embeddings; uncertainty scoring of the pool <= 3 s, on a 2-core CPU).

    python benchmarks/selection_speed.py [--data-root ../shared/data] [--device auto] [--repeats 3]

LeNet is trained on 500 random samples for 10 epochs (round 1 of the default protocol); then the
harness's own selection path (SelectionContext) is timed in float32 and, where the device
computes it natively, in bfloat16 (what ``--score-dtype auto`` picks there). Core-set's greedy
k-center is timed as it runs (``path="auto"``: the projection bound where it prunes, else the
plain update; how many picks took each path is printed) and with the plain update alone.
Synthetic pools of 60k and 1M samples, every pool-based strategy: ``benchmarks/selection_scale.py``;
core-set on embeddings where the bound cannot prune: ``benchmarks/coreset_paths.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.paths import default_data_root
from bench.run.config import fast_bfloat16, resolve_device
from bench.run.loop import selection_context
from bench.training import train_epochs
from strategies.base import SelectionContext
from strategies.coreset import KCenterStats, k_center_greedy
from strategies.uncertainty import uncertainty_scores
from tasks.mnist import MNISTTask


def best_of(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(default_data_root()))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    task = MNISTTask()
    data = task.load(args.data_root, download=False).to(device)
    labeled = np.random.default_rng(0).choice(len(data.pool_x), 500, replace=False)
    torch.manual_seed(0)
    model = task.make_model().to(device)
    index = torch.as_tensor(labeled, device=device)
    train_epochs(
        model,
        torch.optim.Adam(model.parameters(), 1e-3),
        task.loss,
        data.pool_x[index],
        data.pool_y[index],
        10,
        64,
        torch.Generator().manual_seed(0),
    )
    print(f"device {device}, torch threads {torch.get_num_threads()}, pool {tuple(data.pool_x.shape)}")

    dtypes = [torch.float32] + ([torch.bfloat16] if fast_bfloat16(device) else [])
    for dtype in dtypes:

        def context() -> SelectionContext:
            return selection_context(
                task,
                model,
                data.pool_x,
                labeled,
                data.pool_x[index],
                data.pool_y[index],
                np.random.default_rng(0),
                1,
                score_dtype=dtype,
            )

        t_probs, probs = best_of(lambda: context().pool_probabilities, args.repeats, device)
        t_scores, _ = best_of(lambda: uncertainty_scores(probs.cpu().numpy(), "entropy"), args.repeats, device)
        t_embed, embeddings = best_of(lambda: context().pool_embeddings, args.repeats, device)
        stats = KCenterStats()

        def greedy() -> list[int]:
            stats.__init__()
            return k_center_greedy(embeddings, labeled, 500, stats=stats)

        t_greedy, picks = best_of(greedy, args.repeats, device)
        t_plain, plain_picks = best_of(lambda: k_center_greedy(embeddings, labeled, 500, "plain"), args.repeats, device)
        assert len(set(picks)) == 500
        name = str(dtype).removeprefix("torch.")
        print(
            f"[{name}] uncertainty: pool softmax {t_probs:.2f} s + entropy {t_scores:.3f} s = "
            f"{t_probs + t_scores:.2f} s (target <= 3 s)"
        )
        print(
            f"[{name}] coreset: pool embeddings {tuple(embeddings.shape)} {t_embed:.2f} s; greedy k-center, "
            f"500 picks from 500 centres {t_greedy:.2f} s (target <= 2 s; {stats.plain_picks} plain, "
            f"{stats.bound_picks} bound picks); plain update alone {t_plain:.2f} s"
            f"{'' if plain_picks == picks else ' (picks differ: a near-tie)'}; whole selection "
            f"{t_embed + t_greedy:.2f} s"
        )


if __name__ == "__main__":
    main()
