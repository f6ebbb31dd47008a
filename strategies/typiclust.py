"""TypiClust (TPC-RP): the most typical point of each large cluster that holds no labeled sample.

Hacohen, Dekel and Weinshall, ICML 2022, "Active Learning on a Budget: Opposite Strategies Suit
High and Low Budgets". Each round the pool (labeled and unlabeled) is clustered by k-means into
|L| + k clusters, at most ``max_clusters``; clusters are ranked by how many labeled samples they
hold (fewest first), then by size (largest first); from each cluster in that order the strategy
takes its most typical unlabeled point, typicality being the inverse of the mean Euclidean
distance to the point's ``neighbours`` nearest neighbours within its cluster.

Kept from the paper and the authors' code (avihu111/TypiClust, ``deep-al/pycls/al/typiclust.py``):
|L| + k clusters capped at MAX_NUM_CLUSTERS = 500 (``max_clusters``); K_NN = 20 neighbours
(``neighbours``); clusters of at most MIN_CLUSTER_SIZE = 5 points are passed over; clusters
sorted by labeled count, then by size; once every ranked cluster has given a point, the next
point of each is taken in the same order (round robin), as the authors do; typicality
1 / (mean distance + 1e-5).

Changed, and why:

* **The space** (``space``). The paper clusters a self-supervised embedding (SimCLR/SCAN), trained
  without labels. Here ``space="generative"`` (the default) clusters the codes E(x) of the task's
  generative model, which is trained on the pool without labels: the nearest thing this benchmark
  has to the paper's embedding, and the same every round, so the clusters do not follow the few
  labels F was trained on. ``space="model"`` clusters F's penultimate features (retrained every
  round on |L| labels: about 30-500 here). The VAE codes are low-dimensional (3-d on MNIST and
  IVUS, 2-d on Blobs); kNN density is, if anything, better posed there than in 500-d (distances
  do not concentrate), but such codes keep less of the class structure: the option is there to
  measure it.
* **Distances** are Euclidean, as the paper's typicality defines them (the authors' faiss index
  returns squared distances). The neighbours of a point are all the members of its cluster,
  labeled ones and this round's earlier picks included (density is a property of the pool; the
  authors measure it among the still-unlabeled members), with K = min(``neighbours``, size - 1)
  (the authors: min(20, size // 2)); a point alone in its cluster has typicality 0.
* **Small clusters** are not dropped but put after every other cluster, so that a request for
  the whole remaining pool is met (the authors' loop would pick the same cluster again).
* **k-means** is our own, in torch (scikit-learn is not a dependency): k-means++ seeding
  (Arthur & Vassilvitskii 2007) on a random sample of max(3 x clusters, INIT_SAMPLE) points
  (scikit-learn's ``init_size`` idea), then, for pools of at most MINIBATCH_ABOVE = 100,000
  points, Lloyd iterations (at most LLOYD_ITERATIONS = 20, scikit-learn's KMeans allows 300;
  stopped sooner when the centres' squared shifts sum to at most TOLERANCE = 1e-4 times the mean
  per-feature variance, scikit-learn's rule, or no assignment changes); above it mini-batch
  k-means (Sculley 2010: MINIBATCH_STEPS = 100 batches of MINIBATCH = 5,000 points drawn with
  replacement, per-centre learning rate 1 / count) and one final assignment of the whole pool.
  An empty cluster keeps its centre. The authors switch on the number of clusters (KMeans up to
  50, MiniBatchKMeans above); here the pool's size decides, since it is what makes a Lloyd pass
  costly. Assignment goes in blocks of ROWS points (memory O(ROWS x clusters)).
* **Large clusters.** Typicality is measured on at most MAX_TYPICALITY_POINTS = 1,024 members
  of a cluster: in a larger one, on a random subset of that many (from the run's RNG), whose
  unlabeled points are the candidates and whose points are their neighbours; so a cluster costs
  at most 1,024^2 x d multiply-adds (the pick is the most typical point of the subset, a density
  estimate from a uniform subsample; the scores of such a cluster are on the subsample's scale).
  Only when a cluster must give more points than its subset holds (a request for most of the
  pool) is every unlabeled member scored, against the subset.

Ties (equal typicality, equal rank) go to the lower pool index and the lower cluster index.
Randomness (seeding, mini-batches, subsets) comes from a torch generator seeded from
``context.rng``. ``Selection.scores`` holds each pick's typicality. The generative codes never
change during a run and are cached on the instance (not checkpointed, like SNN's pool codes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from strategies.base import Selection, SelectionContext, Strategy
from strategies.coreset import squared_norms
from strategies.latent import encode_in_batches
from strategies.registry import register_strategy
from tasks.base import Capability

SPACES = ("generative", "model")
MIN_CLUSTER_SIZE = 5  # clusters of at most this many points come after all others (authors' MIN_CLUSTER_SIZE)
EPSILON = 1e-5  # typicality = 1 / (mean distance + EPSILON), as the authors
ROWS = 4096  # points per block of an assignment or a distance computation
INIT_SAMPLE = 4096  # k-means++ seeds from max(3 x clusters, this many) random points
MINIBATCH_ABOVE = 100_000  # pools larger than this are clustered by mini-batch k-means
MINIBATCH = 5000  # points per mini-batch (the authors' MiniBatchKMeans batch_size)
MINIBATCH_STEPS = 100  # mini-batches
# At most, for pools of at most MINIBATCH_ABOVE points. Measured on benchmarks/selection_scale.py's
# 60k pool, 500 clusters: the inertia after 20 iterations is within 0.8% (its 3-d codes) and 0.2%
# (its 512-d embeddings) of that after 50; mini-batch k-means ends 5.1% and 2.0% above the latter.
LLOYD_ITERATIONS = 20
TOLERANCE = 1e-4  # Lloyd stops when sum |centre shift|^2 <= TOLERANCE * mean per-feature variance
MAX_TYPICALITY_POINTS = 1024  # typicality is measured on at most this many members of a cluster


@dataclass
class TypiClustStats:
    """What the last selection did (for benchmarks and tests)."""

    method: str = ""  # "lloyd" or "minibatch"
    clusters: int = 0  # k-means clusters asked for
    iterations: int = 0  # Lloyd iterations, or mini-batch steps
    chosen: int = 0  # clusters that gave at least one pick
    kmeans_s: float = 0.0  # seconds clustering (seeding, iterations, final assignment)
    typicality_s: float = 0.0  # seconds measuring typicality and ordering the picks


def nearest_centres(x: Tensor, centres: Tensor) -> Tensor:
    """Index of the nearest row of ``centres`` [C, d] for each row of ``x`` [N, d] (int64 [N]),
    in blocks of ROWS rows (memory O(ROWS x C)); ties go to the lower centre index."""
    c_sq = centres.pow(2).sum(1)
    out = torch.empty(len(x), dtype=torch.int64, device=x.device)
    for i in range(0, len(x), ROWS):
        # |x|^2 is the same for every centre of a row: argmin of |c|^2 - 2 x.c
        out[i : i + ROWS] = torch.addmm(c_sq, x[i : i + ROWS], centres.T, alpha=-2.0).argmin(1)
    return out


def kmeans_plus_plus(x: Tensor, clusters: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeds [clusters, d]: rows of ``x`` [n, d], the first uniform, each next one with
    probability proportional to its squared distance to the nearest seed so far (uniform when
    every point already is a seed)."""
    x_sq = squared_norms(x)
    seeds = torch.empty(clusters, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(len(x), (1,), generator=generator, device=x.device))
    seeds[0] = x[first]
    d2 = (x_sq - 2.0 * (x @ seeds[0]) + x_sq[first]).clamp_min_(0.0)
    for i in range(1, clusters):
        if float(d2.sum()) > 0:
            j = int(torch.multinomial(d2, 1, generator=generator))
        else:
            j = int(torch.randint(len(x), (1,), generator=generator, device=x.device))
        seeds[i] = x[j]
        torch.minimum(d2, (x_sq - 2.0 * (x @ seeds[i]) + x_sq[j]).clamp_min_(0.0), out=d2)
    return seeds


def _initial_centres(x: Tensor, clusters: int, generator: torch.Generator) -> Tensor:
    """k-means++ on a random sample of max(3 x clusters, INIT_SAMPLE) points (all when fewer)."""
    size = min(len(x), max(3 * clusters, INIT_SAMPLE))
    sample = torch.randperm(len(x), generator=generator, device=x.device)[:size] if size < len(x) else None
    return kmeans_plus_plus(x if sample is None else x[sample], clusters, generator)


def _centre_sums(x: Tensor, assign: Tensor, clusters: int) -> tuple[Tensor, Tensor]:
    """Per-cluster sums of the rows of ``x`` [n, d] ([clusters, d]) and counts ([clusters], float)."""
    sums = torch.zeros(clusters, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=clusters).to(x.dtype)
    return sums, counts


def kmeans(
    x: Tensor, clusters: int, generator: torch.Generator, stats: TypiClustStats | None = None
) -> tuple[Tensor, Tensor]:
    """k-means of the rows of ``x`` [N, d] into ``clusters`` clusters: (assignment int64 [N],
    centres float32 [clusters, d]). Lloyd up to MINIBATCH_ABOVE points, mini-batch above
    (see the module's docstring); every random draw from ``generator``."""
    stats = stats if stats is not None else TypiClustStats()
    x = x.float().contiguous()
    n = len(x)
    clusters = max(1, min(clusters, n))
    stats.clusters = clusters
    centres = _initial_centres(x, clusters, generator)
    if n <= MINIBATCH_ABOVE:
        stats.method = "lloyd"
        tol = TOLERANCE * float(x.var(0, unbiased=False).mean())
        assign = nearest_centres(x, centres)
        for it in range(1, LLOYD_ITERATIONS + 1):
            sums, counts = _centre_sums(x, assign, clusters)
            moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None], centres)
            shift = float((moved - centres).double().pow(2).sum())
            centres = moved
            new = nearest_centres(x, centres)
            stats.iterations = it
            same = bool(torch.equal(new, assign))
            assign = new
            if same or shift <= tol:
                break
        return assign, centres
    stats.method = "minibatch"
    seen = torch.zeros(clusters, dtype=x.dtype, device=x.device)  # points each centre has seen
    for step in range(1, MINIBATCH_STEPS + 1):
        batch = x[torch.randint(n, (MINIBATCH,), generator=generator, device=x.device)]
        sums, counts = _centre_sums(batch, nearest_centres(batch, centres), clusters)
        seen += counts
        # c <- c + (sum_b - n_b c) / seen: each point pulls its centre with rate 1 / (points seen)
        centres = centres + (sums - counts[:, None] * centres) / seen.clamp_min(1.0)[:, None]
        stats.iterations = step
    return nearest_centres(x, centres), centres


def typicality(x: Tensor, rows: Tensor, columns: Tensor, neighbours: int) -> Tensor:
    """1 / (mean Euclidean distance to the K nearest of ``x[columns]`` + EPSILON) for each of
    ``x[rows]``, a point never its own neighbour, K = min(``neighbours``, len(columns) - 1)
    (float32 [len(rows)]; 0 when K is 0). ``rows`` and ``columns``: int64 indices into ``x``
    [N, d], computed in blocks of ROWS rows (memory O(ROWS x len(columns)))."""
    k = min(neighbours, len(columns) - 1)
    if k <= 0:
        return torch.zeros(len(rows), dtype=torch.float32, device=x.device)
    cols = x[columns].float()
    centre = cols.mean(0)  # distances measured about the cluster's mean: less cancellation in float32
    cols = cols - centre
    c_sq = cols.pow(2).sum(1)
    out = torch.empty(len(rows), dtype=torch.float32, device=x.device)
    for i in range(0, len(rows), ROWS):
        index = rows[i : i + ROWS]
        block = x[index].float() - centre
        d2 = torch.addmm(c_sq, block, cols.T, alpha=-2.0).add_(block.pow(2).sum(1, keepdim=True)).clamp_min_(0.0)
        d2.masked_fill_(index[:, None] == columns[None, :], float("inf"))  # not its own neighbour
        nearest = torch.topk(d2, k, dim=1, largest=False).values
        out[i : i + ROWS] = 1.0 / (nearest.sqrt().mean(1) + EPSILON)
    return out


def picks_per_cluster(rank: np.ndarray, capacity: np.ndarray, small: np.ndarray, k: int) -> np.ndarray:
    """How many points each cluster gives, and in which pass: round robin over the clusters in
    ``rank`` order (int64 [C], clusters best first), each pass taking one point from every cluster
    with one left (``capacity``: unlabeled members, int64 [C]), until ``k`` are taken; the
    clusters with ``small`` True (bool [C]) only after all the others are exhausted. Returns
    the pick count of each cluster (int64 [C])."""
    counts = np.zeros(len(capacity), dtype=np.int64)
    left = k
    for tier in (rank[~small[rank]], rank[small[rank]]):
        p = 0
        while left > 0:
            active = tier[capacity[tier] > p]
            if len(active) == 0:
                break
            take = active[:left]
            counts[take] += 1
            left -= len(take)
            p += 1
    return counts


def typiclust(
    features: Tensor,
    labeled: np.ndarray,
    k: int,
    max_clusters: int,
    neighbours: int,
    generator: torch.Generator,
    stats: TypiClustStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """TPC-RP on ``features`` [N, d] (every pool point) with ``labeled`` pool indices: ``k`` new
    pool indices (int64 [k], in pick order) and their typicality (float64 [k])."""
    stats = stats if stats is not None else TypiClustStats()
    n = len(features)
    labeled = np.unique(np.asarray(labeled, dtype=np.int64))
    if k > n - len(labeled):
        raise ValueError(f"cannot pick {k} new points: only {n - len(labeled)} are unlabeled")
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    began = time.perf_counter()
    x = features.detach().float().contiguous()
    assign_t, _ = kmeans(x, min(len(labeled) + k, max_clusters), generator, stats)
    clusters = stats.clusters
    stats.kmeans_s = time.perf_counter() - began
    began = time.perf_counter()
    assign = assign_t.cpu().numpy()
    is_labeled = np.zeros(n, dtype=bool)
    is_labeled[labeled] = True
    size = np.bincount(assign, minlength=clusters)
    held = np.bincount(assign[labeled], minlength=clusters)
    # rank: fewest labeled first, then largest, then lowest cluster index (lexsort: last key first)
    rank = np.lexsort((np.arange(clusters), -size, held))
    counts = picks_per_cluster(rank, size - held, size <= MIN_CLUSTER_SIZE, k)
    order = np.argsort(assign, kind="stable")  # members of each cluster, ascending pool index
    start = np.concatenate([[0], np.cumsum(size)])
    position = np.empty(clusters, dtype=np.int64)
    position[rank] = np.arange(clusters)
    small = size <= MIN_CLUSTER_SIZE
    picks, scores, keys = [], [], []
    for c in np.flatnonzero(counts):  # one pass per chosen cluster (at most k), vectorised within
        members = order[start[c] : start[c + 1]]
        columns = members
        if len(members) > MAX_TYPICALITY_POINTS:  # a random subset of the cluster, ascending
            keep = torch.randperm(len(members), generator=generator, device=x.device)[:MAX_TYPICALITY_POINTS]
            columns = np.sort(members[keep.cpu().numpy()])
        candidates = columns[~is_labeled[columns]]
        if len(candidates) < counts[c]:  # more picks than the subset holds: score every unlabeled member
            candidates = members[~is_labeled[members]]
        typ = typicality(
            x, torch.as_tensor(candidates, device=x.device), torch.as_tensor(columns, device=x.device), neighbours
        )
        best = torch.sort(-typ, stable=True).indices[: counts[c]].cpu().numpy()  # ties: lower pool index
        picks.append(candidates[best])
        scores.append(typ.cpu().numpy()[best].astype(np.float64))
        passes = np.arange(len(best))
        keys.append(np.stack([np.full(len(best), small[c]), passes, np.full(len(best), position[c])]))
    stats.chosen = len(picks)
    key = np.concatenate(keys, axis=1)
    final = np.lexsort((key[2], key[1], key[0]))  # small clusters last, then pass, then cluster rank
    stats.typicality_s = time.perf_counter() - began
    return np.concatenate(picks)[final], np.concatenate(scores)[final]


@register_strategy
class TypiClust(Strategy):
    name = "typiclust"
    description = (
        "the most typical point of each large k-means cluster without a labeled sample "
        "(TPC-RP, Hacohen et al., ICML 2022), in the generative codes or F's features"
    )
    requires = frozenset({Capability.GENERATIVE, Capability.EMBEDDINGS})  # one per space: see requirements

    @classmethod
    def requirements(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The generative model for ``space="generative"`` (the default), F's embeddings for
        ``space="model"``."""
        space = options.get("space", "generative")
        return frozenset({Capability.EMBEDDINGS if space == "model" else Capability.GENERATIVE})

    def __init__(self, space: str = "generative", max_clusters: int = 500, neighbours: int = 20) -> None:
        if space not in SPACES:
            raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
        if isinstance(max_clusters, bool) or not isinstance(max_clusters, int) or max_clusters < 1:
            raise ValueError(f"max_clusters must be a positive integer (got {max_clusters!r})")
        if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
            raise ValueError(f"neighbours must be a positive integer (got {neighbours!r})")
        self.space = space
        self.max_clusters = max_clusters
        self.neighbours = neighbours
        self.stats = TypiClustStats()
        self._codes: Tensor | None = None

    def features(self, context: SelectionContext) -> Tensor:
        """The pool in the chosen space [N, d]: F's penultimate features (this round's), or the
        codes E(x), computed once per run (E and the pool never change; a cache, not state)."""
        if self.space == "model":
            return context.pool_embeddings
        context.need(Capability.GENERATIVE, "typiclust with space='generative'")
        if self._codes is None or len(self._codes) != len(context.pool_x):
            assert context.generative is not None  # the task provides it (need above)
            self._codes = encode_in_batches(context.generative.encode, context.pool_x).float()
        return self._codes

    def select(self, context: SelectionContext, k: int) -> Selection:
        self.stats = TypiClustStats()
        generator = torch.Generator(device=context.device).manual_seed(int(context.rng.integers(2**63)))
        picks, scores = typiclust(
            self.features(context), context.labeled, k, self.max_clusters, self.neighbours, generator, self.stats
        )
        return Selection(indices=picks, scores=scores)
