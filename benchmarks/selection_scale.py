"""Every pool-based strategy's selection on synthetic pools of 60k and 1M samples: time and peak
memory, each strategy in a fresh process.

    python benchmarks/selection_scale.py [--sizes 60000 1000000] [--k 500] [--threads 2]
        [--device cpu] [--strategies random uncertainty coreset coreset-plain snn badge lcmd]
        [--kinds latent isotropic]

The pool holds 512-d embeddings of 10 classes: ``latent`` embeddings are relu(Z @ W) of a 20-d
latent Z whose first 3 coordinates are the class (10 class centres plus noise), ``isotropic`` ones
are standard Gaussian (core-set's worst case; run for core-set only). 500 random samples are
labeled. ``coreset-plain`` is core-set with its plain update on every pick (``path="plain"``,
the reference for the strategies built on that update: BADGE's and LCMD's per-pick work is the
same mat-vec over the pool). The harness's selection path runs as in a real round, through
``bench.run.loop.selection_context``: the target model is a tiny stand-in whose ``embed`` returns the
stored embeddings and whose forward is a Linear layer to 10 logits (so ``pool_embeddings`` and
``pool_probabilities`` are computed by the harness's batched inference), and SNN's generative
model is a linear stand-in with 3-d codes (``encode``: a fixed orthonormal projection,
``decode``: its transpose), so SNN encodes the pool and builds its KD-tree as in a run.

Each (strategy, size, kind) runs in a fresh subprocess. Its phases are timed and their peak extra
memory measured: on the CPU the process's peak resident set during the phase (VmHWM, reset before
each phase through /proc/self/clear_refs) less its resident set at the phase's start; on a GPU
``torch.cuda.max_memory_allocated`` less the memory allocated at the start. The phases are

* ``prepare``: what the harness (or the strategy, once per run) computes before ``select``
  (:data:`PREPARE`): ``pool_embeddings`` for core-set and LCMD (one copy of the embeddings, made
  by the harness's batched inference), ``pool_probabilities`` for uncertainty, both for BADGE,
  the pool's codes and KD-tree for SNN;
* ``select``: the strategy's ``select(context, k)`` with that cached.

The table gives both, the select phase's peak also in units of one pool-sized float32 vector
(4 N bytes), and the whole process's peak (resident set on the CPU: the interpreter and libraries,
the pool, and both phases; allocated memory on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout that is not installed

from bench.run.config import resolve_device  # noqa: E402
from bench.run.loop import selection_context  # noqa: E402
from strategies import STRATEGIES, Strategy  # noqa: E402
from strategies.base import Selection, SelectionContext  # noqa: E402
from strategies.coreset import CoreSet, KCenterStats, k_center_greedy  # noqa: E402
from strategies.typiclust import TypiClust, TypiClustStats  # noqa: E402
from tasks.base import Capability, Metric, Protocol, Task  # noqa: E402

DIM, CLASSES, CODE_DIM, LATENT_DIM = 512, 10, 3, 20
BLOCK = 65536  # rows generated at a time (the pool is filled in place: no pool-sized temporaries)
MIB = 2**20


class PlainCoreSet(CoreSet):
    """Core-set with the plain update on every pick (not registered: this benchmark's reference)."""

    name = "coreset-plain"

    def select(self, context: SelectionContext, k: int) -> Selection:
        self.stats = KCenterStats()
        picks = k_center_greedy(context.pool_embeddings, context.labeled, k, path="plain", stats=self.stats)
        return Selection(indices=np.asarray(picks, dtype=np.int64), scores=np.asarray(self.stats.distances))


class ModelSpaceTypiClust(TypiClust):
    """TypiClust clustering F's features (the 512-d embeddings) rather than the 3-d codes."""

    name = "typiclust-model"

    def __init__(self) -> None:
        super().__init__(space="model")


#: The strategies run by default, in this order (add a new pool strategy here and, when the harness
#: computes something for it before ``select``, to :data:`PREPARE`).
STRATEGY_NAMES = [
    "random",
    "uncertainty",
    "coreset",
    "coreset-plain",
    "snn",
    "badge",
    "lcmd",
    "typiclust",
    "typiclust-model",
]
#: Benchmark-only variants of registered strategies, by name.
VARIANTS: dict[str, type[Strategy]] = {"coreset-plain": PlainCoreSet, "typiclust-model": ModelSpaceTypiClust}
#: What the harness computes (cached in the context) before each strategy's ``select``: the
#: prepare phase. A strategy that computes something of its own once per run (SNN's pool codes)
#: is prepared in :func:`prepare`.
PREPARE: dict[str, tuple[str, ...]] = {
    "random": (),
    "uncertainty": ("pool_probabilities",),
    "coreset": ("pool_embeddings",),
    "coreset-plain": ("pool_embeddings",),
    "badge": ("pool_probabilities", "pool_embeddings"),
    "lcmd": ("pool_embeddings",),
    "typiclust-model": ("pool_embeddings",),
}


def create(name: str) -> Strategy:
    return VARIANTS[name]() if name in VARIANTS else STRATEGIES.create(name)


def prepare(name: str, strategy: Strategy, context: SelectionContext) -> None:
    """The prepare phase of strategy ``name`` (see :data:`PREPARE`)."""
    for attribute in PREPARE.get(name, ()):
        getattr(context, attribute)
    if name == "snn":
        strategy.pool_codes(context)  # type: ignore[attr-defined]  # SNN's codes and KD-tree
    if name == "typiclust":
        strategy.features(context)  # type: ignore[attr-defined]  # the pool's codes, cached once per run


class Model(nn.Module):
    """The target model's stand-in: the embeddings are the pool itself; 10 logits by a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(DIM, CLASSES)

    def embed(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class LinearCodes(nn.Module):
    """The generative model's stand-in: 3-d codes by a fixed orthonormal projection."""

    def __init__(self, mean: Tensor, generator: torch.Generator) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(DIM, CODE_DIM, generator=generator))
        self.register_buffer("basis", q)
        self.register_buffer("mean", mean)

    def encode(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.basis

    def decode(self, z: Tensor) -> Tensor:
        return z @ self.basis.T + self.mean


class SyntheticPool(Task):
    name = "synthetic-pool"
    description = "synthetic 512-d embeddings of 10 classes (benchmarks only)"
    metric = Metric("accuracy", True, "accuracy")
    protocol = Protocol(500, 500, 1, 1, 64, 1e-3)
    capabilities = frozenset({Capability.EMBEDDINGS, Capability.PROBABILITIES, Capability.GENERATIVE})

    def load(self, data_root, download=True):
        raise NotImplementedError("the pool is built by the benchmark")

    def make_model(self) -> nn.Module:
        return Model()

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nnf.cross_entropy(output, target)

    def scores(self, output: Tensor, target: Tensor) -> dict[str, float]:
        return {"accuracy": float((output.argmax(1) == target).float().mean())}


def build_pool(n: int, kind: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Embeddings float32 [n, 512] and classes int64 [n], filled block by block."""
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(CLASSES, CODE_DIM, generator=g)
    weights = torch.randn(LATENT_DIM, DIM, generator=g) / LATENT_DIM**0.5
    x = torch.empty(n, DIM)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    for start in range(0, n, BLOCK):
        rows = slice(start, min(n, start + BLOCK))
        m = rows.stop - rows.start
        if kind == "isotropic":
            x[rows] = torch.randn(m, DIM, generator=g)
        elif kind == "latent":
            z = torch.randn(m, LATENT_DIM, generator=g)
            z[:, :CODE_DIM] += centres[y[rows]]
            torch.matmul(z, weights, out=x[rows]).relu_()
        else:
            raise ValueError(f"unknown kind {kind!r}")
    return x, y


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class Peak:
    """Peak extra memory of a phase, in bytes (see the module's docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # the peak resident set becomes the current one
            self.start = _rss_kib("VmRSS") * 1024
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.total = torch.cuda.max_memory_allocated()
        else:
            self.total = _rss_kib("VmHWM") * 1024
        self.bytes = self.total - self.start
        self.seconds = time.perf_counter() - self.began


def warm_up(strategy_name: str, kind: str, k: int, device: torch.device) -> None:
    """One selection on a small pool, so that the measured one finds the code it runs resident."""
    x, y = build_pool(max(4 * k, 4096), kind, seed=1)
    x, y = x.to(device), y.to(device)
    model, generative = Model().to(device), LinearCodes(x.mean(0), torch.Generator().manual_seed(1)).to(device)
    labeled = np.arange(0, len(x), 8, dtype=np.int64)[:k]
    index = torch.as_tensor(labeled, device=device)
    rng = np.random.default_rng(1)
    context = selection_context(SyntheticPool(), model, x, labeled, x[index], y[index], rng, 1, generative=generative)
    create(strategy_name).select(context, k)


def worker(strategy_name: str, n: int, kind: str, k: int, labeled_n: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    x, y = build_pool(n, kind)
    task = SyntheticPool()
    model = task.make_model()
    generative = LinearCodes(x[:BLOCK].mean(0), torch.Generator().manual_seed(1))
    if device.type == "cuda":
        x, y = x.to(device), y.to(device)
        model.to(device), generative.to(device)
    rng = np.random.default_rng(0)
    labeled = np.sort(rng.choice(n, labeled_n, replace=False)).astype(np.int64)
    index = torch.as_tensor(labeled, device=device)
    context = selection_context(task, model, x, labeled, x[index], y[index], rng, 1, generative=generative)
    warm_up(strategy_name, kind, k, device)  # the libraries' code and buffers are not the pool's
    strategy = create(strategy_name)
    built = torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_kib("VmHWM") * 1024
    with Peak(device) as prepared:
        prepare(strategy_name, strategy, context)
    with Peak(device) as select:
        selection = strategy.select(context, k)
    assert len(np.unique(selection.indices)) == k
    result = dict(
        strategy=strategy_name,
        n=n,
        kind=kind,
        k=k,
        device=str(device),
        threads=torch.get_num_threads(),
        prepare_s=prepared.seconds,
        prepare_mib=prepared.bytes / MIB,
        select_s=select.seconds,
        select_mib=select.bytes / MIB,
        peak_gib=max(built, prepared.total, select.total) / 2**30,
        pool_mib=x.numel() * 4 / MIB,
        vector_mib=4 * n / MIB,
    )
    stats = getattr(strategy, "stats", None)
    if isinstance(stats, KCenterStats):
        result["paths"] = f"{stats.plain_picks} plain / {stats.bound_picks} bound picks"
    if isinstance(stats, TypiClustStats):
        result["paths"] = (
            f"{stats.method} k-means, {stats.clusters} clusters, {stats.iterations} "
            f"{'iterations' if stats.method == 'lloyd' else 'batches'}: {stats.kmeans_s:.1f} s; "
            f"typicality in {stats.chosen} clusters: {stats.typicality_s:.1f} s"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60000, 1000000])
    parser.add_argument("--strategies", nargs="+", default=STRATEGY_NAMES)
    parser.add_argument(
        "--kinds", nargs="+", default=["latent", "isotropic"], help="embedding kinds; isotropic for core-set only"
    )
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--labeled", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", nargs=3, metavar=("STRATEGY", "N", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.worker:
        name, n, kind = args.worker
        print(json.dumps(worker(name, int(n), kind, args.k, args.labeled, device)))
        return
    print(
        f"device {device}, {args.threads} threads, torch {torch.__version__}; k = {args.k}, "
        f"{args.labeled} labeled; peak = extra memory over the phase's start"
    )
    header = (
        "strategy",
        "embeddings",
        "pool N",
        "k",
        "prepare s",
        "prepare peak MiB",
        "select s",
        "select peak MiB",
        "select peak / 4N B",
        "process peak GiB",
        "notes",
    )
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    # allocations of 64 KiB and more straight from the kernel (mmap) and back to it when freed, so
    # that the resident set follows what is allocated (glibc would otherwise keep freed blocks of
    # up to 32 MiB in its heap and the next phase's allocations would not show)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MALLOC_MMAP_THRESHOLD_="65536")
    for n in args.sizes:
        for name in args.strategies:
            for kind in args.kinds if name.startswith("coreset") else args.kinds[:1]:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    name,
                    str(n),
                    kind,
                    "--k",
                    str(args.k),
                    "--labeled",
                    str(args.labeled),
                    "--threads",
                    str(args.threads),
                    "--device",
                    args.device,
                ]
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    print(f"| {name} | {kind} | {n:,} | {args.k} | failed: {done.stderr.strip().splitlines()[-1:]} |")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                notes = f"pool {r['pool_mib']:,.0f} MiB" + (f"; {r['paths']}" if "paths" in r else "")
                print(
                    f"| {name} | {kind} | {n:,} | {args.k} | {r['prepare_s']:.2f} | {r['prepare_mib']:,.1f} | "
                    f"{r['select_s']:.2f} | {r['select_mib']:,.1f} | {r['select_mib'] / r['vector_mib']:.1f} | "
                    f"{r['peak_gib']:.2f} | "
                    f"{notes} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
