"""Core-set's greedy k-center on several kinds of embeddings: the previous implementation (the
projection bound on every pick), the current one (the bound only where it prunes, else the plain
update) and each path forced (plain only, bound only).

    python benchmarks/coreset_paths.py [--n 60000] [--d 500] [--picks 500] [--threads 2]
        [--kinds isotropic relu-latent20 relu-latent64 mnist-lenet] [--variants previous auto plain bound]
        [--repeats 5] [--data-root ../shared/data]

Kinds: ``isotropic`` (standard Gaussian embeddings, no dominant axis: the bound prunes nothing),
``relu-latent<L>`` (relu(Z @ W), Z [n, L], W [L, d], both standard Gaussian: with L = 20 the bound
prunes nearly everything; with L = 64 it leaves a quarter to a third of the pool, near the
break-even fraction; with L = 100, most of it) and ``mnist-lenet`` (LeNet's penultimate features
of the 60k MNIST pool after round 1 of the default protocol: 500 random samples, 10 epochs; needs
the MNIST files, skipped without them). 500 random labeled rows are the initial centres. Every
variant must return the same picks (checked; a difference would be a near-tie decided
differently by float32 rounding, and is reported).

Each variant runs on a small input first (so none pays the libraries' first-call costs), then
``--repeats`` times: auto and plain back to back (in turn first), then the others. The best and
median wall times and the best CPU time of the process are reported, and auto / plain as the
median of the ratios of the back-to-back pairs (this machine shares its host: its wall times vary
by up to 2x from run to run, mostly slowly, which the pairs cancel), with the seconds auto spent
deciding (the principal axes and the probes: its only work beyond the chosen path's). The
previous implementation runs ``--previous-repeats`` times (on isotropic
embeddings it takes minutes). Times include the initial distances to the labeled centres and,
where used, the principal axes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from strategies.coreset import (  # noqa: E402
    KCenterStats,
    _principal_axes,
    k_center_greedy,
    nearest_centre_distances,
    squared_norms,
)

PREVIOUS_SLACK = 1e-5


def previous_k_center_greedy(embeddings: Tensor, labeled_idx, k: int) -> list[int]:
    """The implementation before the plain path (commit b05c660): the projection bound on every
    pick, every candidate gathered at once (its initial distances are the current blocked ones,
    which compute the same values)."""
    x = embeddings.detach().float()
    labeled = torch.as_tensor(np.asarray(labeled_idx, dtype=np.int64).reshape(-1), device=x.device)
    min_sq, _ = nearest_centre_distances(x, squared_norms(x), labeled)
    min_sq[labeled] = -1.0
    projected = x @ _principal_axes(x, 32)
    projected_sq = projected.pow(2).sum(1)
    picks: list[int] = []
    for _ in range(k):
        i = int(torch.argmax(min_sq))
        picks.append(i)
        bound = projected_sq + projected_sq[i] - 2.0 * (projected @ projected[i])
        slack = PREVIOUS_SLACK * (projected_sq + projected_sq[i])
        maybe = torch.nonzero(bound - slack < min_sq).squeeze(1)
        exact = (x[maybe] - x[i]).pow(2).sum(1)
        min_sq[maybe] = torch.minimum(min_sq[maybe], exact)
        min_sq[i] = -1.0
    return picks


def embeddings_of(kind: str, n: int, d: int, data_root: str) -> Tensor | None:
    g = torch.Generator().manual_seed(0)
    if kind == "isotropic":
        return torch.randn(n, d, generator=g)
    if kind.startswith("relu-latent"):
        latent = int(kind.removeprefix("relu-latent"))
        return torch.relu(torch.randn(n, latent, generator=g) @ torch.randn(latent, d, generator=g))
    if kind == "mnist-lenet":
        from bench.run.loop import selection_context
        from bench.training import train_epochs
        from tasks.base import DataNotFoundError
        from tasks.mnist import MNISTTask

        task = MNISTTask()
        try:
            data = task.load(data_root, download=False)
        except (DataNotFoundError, FileNotFoundError) as error:
            print(f"mnist-lenet skipped: {error}")
            return None
        labeled = np.random.default_rng(0).choice(len(data.pool_x), 500, replace=False)
        index = torch.as_tensor(labeled)
        torch.manual_seed(0)
        model = task.make_model()
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
        context = selection_context(
            task, model, data.pool_x, labeled, data.pool_x[index], data.pool_y[index], np.random.default_rng(0), 1
        )
        return context.pool_embeddings
    raise ValueError(f"unknown kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--d", type=int, default=500)
    parser.add_argument("--picks", type=int, default=500)
    parser.add_argument("--labeled", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--previous-repeats", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=["isotropic", "relu-latent20", "relu-latent64", "mnist-lenet"])
    parser.add_argument("--variants", nargs="+", default=["previous", "auto", "plain", "bound"])
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.data_root is None:
        from bench.paths import default_data_root

        args.data_root = str(default_data_root())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.picks} picks from "
        f"{args.labeled} labeled centres"
    )
    small = torch.randn(4096, args.d, generator=torch.Generator().manual_seed(2))
    previous_k_center_greedy(small, np.arange(50), 20)
    for variant in ("auto", "plain", "bound"):
        k_center_greedy(small, np.arange(50), 20, variant)
    for kind in args.kinds:
        x = embeddings_of(kind, args.n, args.d, args.data_root)
        if x is None:
            continue
        labeled = np.random.default_rng(1).choice(len(x), args.labeled, replace=False)
        seconds: dict[str, list[float]] = {variant: [] for variant in args.variants}
        cpu: dict[str, list[float]] = {variant: [] for variant in args.variants}
        notes, picks, deciding = {}, {}, []
        pair = [v for v in ("auto", "plain") if v in args.variants]
        others = [v for v in args.variants if v not in pair]
        for r in range(args.repeats):  # auto and plain back to back, in turn first; then the others
            order = (pair if r % 2 == 0 else pair[::-1]) + others
            for variant in order:
                if variant == "previous" and r >= args.previous_repeats:
                    continue
                stats = KCenterStats()
                start, start_cpu = time.perf_counter(), time.process_time()
                if variant == "previous":
                    picks[variant] = previous_k_center_greedy(x, labeled, args.picks)
                else:
                    picks[variant] = k_center_greedy(x, labeled, args.picks, variant, stats)
                seconds[variant].append(time.perf_counter() - start)
                cpu[variant].append(time.process_time() - start_cpu)
                if variant == "auto":
                    deciding.append(stats.deciding_s)
                if variant != "previous":
                    fraction = stats.measured / max(1, stats.bound_picks) / len(x)
                    notes[variant] = (
                        f"{stats.plain_picks} plain, {stats.bound_picks} bound picks, "
                        f"{stats.probes} probes"
                        + (f", {fraction:.2%} of the pool measured per bound pick" if stats.bound_picks else "")
                    )
        reference = picks[args.variants[0]]
        for variant in args.variants:
            times = sorted(seconds[variant])
            same = (
                "same picks"
                if picks[variant] == reference
                else "picks differ from "
                f"{args.variants[0]}'s at pick "
                f"{next(j for j, (a, b) in enumerate(zip(picks[variant], reference)) if a != b)}"
            )
            extra = "; ".join(filter(None, [notes.get(variant), same]))
            print(
                f"{kind} {tuple(x.shape)}: {variant} best {times[0]:.2f} s, median {np.median(times):.2f} s "
                f"of {len(times)}, CPU time best {min(cpu[variant]):.2f} s ({extra})",
                flush=True,
            )
        if "plain" in seconds and "auto" in seconds:
            paired = np.median(np.divide(seconds["auto"], seconds["plain"]))
            print(
                f"{kind}: auto / plain = {paired:.3f} (median of the {args.repeats} back-to-back pairs), "
                f"{min(seconds['auto']) / min(seconds['plain']):.3f} (best), "
                f"{np.median(seconds['auto']) / np.median(seconds['plain']):.3f} (median), "
                f"{min(cpu['auto']) / min(cpu['plain']):.3f} (CPU time, best); auto spent "
                f"{np.median(deciding):.3f} s (median) on the axes and probes = "
                f"{np.median(deciding) / min(seconds['plain']):.1%} of plain's best time",
                flush=True,
            )


if __name__ == "__main__":
    main()
