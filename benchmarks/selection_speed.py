"""Selection speed of the baselines on the full MNIST pool (issue: core-set <= 2 s for 500 picks
from 60,000 x 500 embeddings; uncertainty scoring of the pool <= 3 s).

    python benchmarks/selection_speed.py [--data-root ../shared/data] [--device cpu] [--repeats 3]

LeNet is trained briefly on 500 random samples (as in round 1), then each step is timed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.config import resolve_device
from bench.paths import default_data_root
from bench.training import predict, train_epochs
from strategies.coreset import k_center_greedy
from strategies.uncertainty import uncertainty_scores
from tasks.mnist import MNISTTask


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
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
    rng = np.random.default_rng(0)
    labeled = rng.choice(len(data.pool_x), 500, replace=False)
    torch.manual_seed(0)
    model = task.make_model().to(device)
    index = torch.as_tensor(labeled, device=device)
    train_epochs(model, torch.optim.Adam(model.parameters(), 1e-3), task.loss, data.pool_x[index],
                 data.pool_y[index], 10, 64, torch.Generator().manual_seed(0))

    print(f"device {device}, torch threads {torch.get_num_threads()}, pool {tuple(data.pool_x.shape)}")
    softmax = lambda b: torch.softmax(model(b), dim=1)  # noqa: E731
    t_probs, probs = timed(lambda: predict(model, data.pool_x, fn=softmax), args.repeats)
    t_scores, _ = timed(lambda: uncertainty_scores(probs.cpu().numpy(), "entropy"), args.repeats)
    print(f"uncertainty: softmax over the pool {t_probs:.2f} s + entropy scores {t_scores:.3f} s "
          f"= {t_probs + t_scores:.2f} s (target <= 3 s)")
    t_embed, embeddings = timed(lambda: predict(model, data.pool_x, fn=model.embed), args.repeats)
    t_greedy, picks = timed(lambda: k_center_greedy(embeddings, labeled, 500), args.repeats)
    print(f"coreset: embeddings {tuple(embeddings.shape)} in {t_embed:.2f} s; k-center greedy, "
          f"500 picks from 500 centres: {t_greedy:.2f} s (target <= 2 s)")
    assert len(set(picks)) == 500


if __name__ == "__main__":
    main()
