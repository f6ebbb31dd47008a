"""Core-set selection (Sener & Savarese, 2017): greedy k-center on F's penultimate embeddings.

The labeled samples are the initial centres; each pick is the pool point farthest from its
nearest centre, and a min-distance vector [N] is updated after each pick. Each update takes one
of two paths, chosen per pick:

* the plain update: |x - c|^2 = |x|^2 + |c|^2 - 2 x.c for the whole pool from one mat-vec and an
  elementwise minimum (O(N d), no gather; |x|^2 is computed once);
* the bound: the distance between projections onto a few principal axes never exceeds the true
  distance, so points whose projected distance is not below their current distance cannot come
  closer to the new centre; only the others (the candidates) are gathered, a fixed block of rows
  at a time, and measured as above. It costs O(N p) for the bound (p = 32 axes) and the
  candidates' rows.

The bound pays where the embeddings have a few dominant axes (LeNet's MNIST features: a 500-pick,
60k-point selection in well under a second) and is no help where they have none (isotropic
embeddings: nearly every point is a candidate). So the bound is first tried on a fixed probe of
2,048 pool rows (their projections kept): the bound path is taken when the probe's fraction of
candidates is below :func:`break_even_fraction`, else the plain update, and the next probe waits
1, 2, 4, ... up to MAX_WAIT picks (the fraction changes slowly; the probe is then nearly free).
Nothing pool-sized is copied to decide or to measure, and the pool's projection [N, p] is built
only the first time the bound path is taken. :class:`KCenterStats` counts the picks of each path.

The answer is the plain greedy answer, up to float32 rounding in near-ties. Memory beyond the
embeddings is O(N): three float32 vectors of length N on the plain path; the projection [N, p],
three more vectors and the candidates' indices when the bound is used; and blocks of a fixed
size (never N x N, nor N x labeled).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from strategies.base import Selection, SelectionContext, Strategy
from strategies.registry import register_strategy
from tasks.base import Capability

CHUNK = 2048  # pool rows per block (initial distances, norms, projection, candidate gathers)
CENTRE_CHUNK = 1024  # labeled centres per block of the initial distances
AXES_CHUNK = 512  # sample rows per block of the principal axes' Gram matrix
PROJECTION_DIM = 32  # principal axes of the lower bound
PROBE = 2048  # pool rows on which each pick estimates how much the bound prunes
SLACK = 1e-5  # relative rounding slack: a bound within it of the current distance is checked exactly
PATHS = ("auto", "plain", "bound")

# When the bound path pays: measured on a 2-core x86-64 CPU with 60k rows and 32 axes, the bound
# costs about 11 ns per pool row and each candidate 60-80 / 120-130 / 250-270 / 410-500 ns at
# d = 128 / 256 / 500 / 1024, against 14.5 / 30 / 100 / 175 ns per row for the plain update (its
# mat-vec is cheap where the embeddings fit in the cache): it breaks even at a candidate fraction
# of about 0.05 / 0.15 / 0.35 / 0.36. BREAK_EVEN_SCALE * (1 - BREAK_EVEN_DIM / d) stays at or
# below that (0.06 / 0.16 / 0.20 / 0.23), so a bound pick costs at most about the plain one.
BREAK_EVEN_SCALE = 0.25
BREAK_EVEN_DIM = 96  # at or below it the bound never pays (the plain update is all per-row overhead)
MAX_WAIT = 16  # after a probe that chose the plain update, the next probe waits 1, 2, 4, ... picks
# The bound's fixed costs must be small beside the plain update's work, or it is not tried at all.
# Its principal axes (a Gram matrix of AXES_SAMPLE rows and an eigendecomposition) cost as much as
# 4.8 / 6.8 / 7.0 / 14.8 plain picks at 60k rows and d = 128 / 256 / 512 / 1024 (on that CPU),
# less than 0.53 (AXES_SAMPLE + d) d / N picks: k * N >= AXES_PAYBACK * (AXES_SAMPLE + d) * d
# keeps them under 5% of k plain picks. A bound pick's fixed overhead (some 25 small operations,
# about 0.15 ms on the CPU) must be small beside a plain pick: N * d >= MIN_BOUND_ELEMENTS.
AXES_SAMPLE = 4096
AXES_PAYBACK = 10.0
MIN_BOUND_ELEMENTS = 1 << 22


@dataclass
class KCenterStats:
    """What :func:`k_center_greedy` did: how many picks took each update path."""

    plain_picks: int = 0  # picks whose update was the plain O(N d) pass over the pool
    bound_picks: int = 0  # picks whose update measured only the bound's candidates
    measured: int = 0  # rows measured on the bound path, all its picks together
    probes: int = 0  # picks at which the bound was tried on the probe rows
    deciding_s: float = 0.0  # seconds spent on the principal axes and the probes (not on updates)
    projected: bool = False  # whether the pool's projection [N, p] was built
    break_even: float = 0.0  # the candidate fraction below which the bound path is taken
    distances: list[float] = field(default_factory=list)  # each pick's distance to its nearest centre when picked

    @property
    def picks(self) -> int:
        return self.plain_picks + self.bound_picks


def break_even_fraction(n: int, d: int, k: int) -> float:
    """The fraction of candidates below which the bound path is taken, for ``k`` picks from
    ``n`` embeddings of dimension ``d``: 0 (never) where its fixed costs would not pay (see
    AXES_PAYBACK), else BREAK_EVEN_SCALE * (1 - BREAK_EVEN_DIM / d) (<= 0: never)."""
    if n * d < MIN_BOUND_ELEMENTS or k * n < AXES_PAYBACK * (min(n, AXES_SAMPLE) + d) * d:
        return 0.0
    return max(0.0, BREAK_EVEN_SCALE * (1.0 - BREAK_EVEN_DIM / d))


def squared_norms(x: Tensor) -> Tensor:
    """|x_i|^2 for each row of ``x`` [N, d], in blocks of rows (float32 [N])."""
    out = torch.empty(len(x), device=x.device, dtype=x.dtype)
    for start in range(0, len(x), CHUNK):
        out[start : start + CHUNK] = x[start : start + CHUNK].pow(2).sum(1)
    return out


def nearest_centre_distances(x: Tensor, x_sq: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Squared Euclidean distance from each row of ``x`` [N, d] to its nearest row among
    ``x[centres]`` (float32 [N], clamped at 0; infinite with no centres) and that centre's
    position in ``centres`` (int64 [N]; the first on ties), in blocks of CHUNK rows by
    CENTRE_CHUNK centres (``x_sq``: the rows' squared norms)."""
    out = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
    which = torch.zeros(len(x), device=x.device, dtype=torch.int64)
    for c_start in range(0, len(centres), CENTRE_CHUNK):
        index = centres[c_start : c_start + CENTRE_CHUNK]
        c, c_sq = x[index], x_sq[index]
        for start in range(0, len(x), CHUNK):
            rows = slice(start, start + CHUNK)
            sq = torch.addmm(c_sq, x[rows], c.T, alpha=-2.0).add_(x_sq[rows, None])
            nearest, position = sq.min(dim=1)
            nearest.clamp_min_(0.0)
            closer = nearest < out[rows]  # strictly: an earlier block keeps its ties
            out[rows] = torch.where(closer, nearest, out[rows])
            which[rows] = torch.where(closer, position + c_start, which[rows])
    return out, which


def _principal_axes(x: Tensor, dim: int) -> Tensor:
    """An orthonormal basis [d, dim] of the top principal axes of ``x`` (from a fixed subsample of
    AXES_SAMPLE rows, in blocks of AXES_CHUNK rows; the Gram matrix in float32, its eigenvectors
    in float64, as float32 eigh fails to converge on some VGG features)."""
    dim = min(dim, x.shape[1])
    sample = torch.linspace(0, len(x) - 1, min(len(x), AXES_SAMPLE), device=x.device).long()
    blocks = [sample[start : start + AXES_CHUNK] for start in range(0, len(sample), AXES_CHUNK)]
    mean = (sum(x[block].double().sum(0) for block in blocks) / len(sample)).to(x.dtype)
    gram = torch.zeros(x.shape[1], x.shape[1], device=x.device, dtype=x.dtype)
    for block in blocks:
        centred = x[block].sub_(mean)
        gram.addmm_(centred.T, centred)
    gram = gram.double()
    gram /= gram.diagonal().sum().clamp_min(torch.finfo(gram.dtype).tiny)
    try:
        _, vectors = torch.linalg.eigh(gram)
    except torch.linalg.LinAlgError:  # no usable axes: a zero basis bounds nothing, every point is measured
        return torch.zeros(x.shape[1], dim, device=x.device, dtype=x.dtype)
    return vectors[:, -dim:].to(x.dtype).contiguous()


class _Bound:
    """The projection lower bound: the probe's projections always, the pool's once needed."""

    def __init__(self, x: Tensor, dim: int) -> None:
        self.x = x
        self.axes = _principal_axes(x, dim)
        self.probe = torch.linspace(0, len(x) - 1, min(len(x), PROBE), device=x.device).long().unique()
        self.probe_projected = x[self.probe] @ self.axes
        self.probe_sq = self.probe_projected.pow(2).sum(1).mul_(1.0 - SLACK)
        self.projected: Tensor | None = None
        self.projected_sq: Tensor | None = None
        self.bound: Tensor | None = None  # buffers [N] of the pool's bound and its comparison
        self.below: Tensor | None = None

    def candidate_fraction(self, i: int, min_sq: Tensor) -> float:
        """The fraction of probe rows that the bound cannot rule out for centre ``x[i]``."""
        centre = self.x[i] @ self.axes
        threshold = self.probe_sq - 2.0 * (self.probe_projected @ centre) + centre.pow(2).sum() * (1.0 - SLACK)
        return int(torch.count_nonzero(threshold < min_sq[self.probe])) / len(self.probe)

    def candidates(self, i: int, min_sq: Tensor) -> Tensor:
        """Pool indices whose bound for centre ``x[i]`` is below their current distance (int64 [m]).

        |P(x) - P(c)|^2 <= |x - c|^2, so a point whose bound (less a rounding slack of SLACK
        relative to the projected norms) is not below its current distance cannot come closer."""
        if self.projected is None:
            n, dim = len(self.x), self.axes.shape[1]
            self.projected = torch.empty(n, dim, device=self.x.device, dtype=self.x.dtype)
            for start in range(0, n, CHUNK):
                torch.matmul(self.x[start : start + CHUNK], self.axes, out=self.projected[start : start + CHUNK])
            self.projected_sq = squared_norms(self.projected).mul_(1.0 - SLACK)
            self.bound = torch.empty(n, device=self.x.device, dtype=self.x.dtype)
            self.below = torch.empty(n, device=self.x.device, dtype=torch.bool)
        centre = self.projected[i]
        bound = torch.mv(self.projected, centre, out=self.bound).mul_(-2.0).add_(self.projected_sq)
        bound += float(centre.pow(2).sum()) * (1.0 - SLACK)
        return torch.nonzero(torch.lt(bound, min_sq, out=self.below)).squeeze(1)


def k_center_greedy(
    embeddings: Tensor, labeled_idx, k: int, path: str = "auto", stats: KCenterStats | None = None
) -> list[int]:
    """Greedy k-center: ``k`` new indices into ``embeddings`` [N, d], in the order picked.

    The rows ``labeled_idx`` are the initial centres and are never picked. Each pick maximises
    the distance to the nearest centre; ties go to the lowest index. With no labeled rows the
    first pick is index 0 (every distance is infinite).

    ``path`` chooses the update after each pick: ``"auto"`` (the bound where it prunes enough,
    else the plain update; see the module's docstring), ``"plain"`` or ``"bound"`` (always that
    one; for tests and benchmarks). ``stats``, when given, is filled in with the picks of each path.
    Both paths measure |x - c|^2 as |x|^2 + |c|^2 - 2 x.c (float32, clamped at 0).
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
    stats = stats if stats is not None else KCenterStats()
    x = embeddings.detach().float()
    if not x.is_contiguous():
        x = x.contiguous()
    n, d = x.shape
    labeled = torch.unique(torch.as_tensor(np.asarray(labeled_idx, dtype=np.int64).reshape(-1), device=x.device))
    if k > n - len(labeled):
        raise ValueError(f"cannot pick {k} new points: only {n - len(labeled)} are unlabeled")
    x_sq = squared_norms(x)
    min_sq, _ = nearest_centre_distances(x, x_sq, labeled)
    min_sq[labeled] = -1.0  # never picked
    p = min(PROJECTION_DIM, d)
    stats.break_even = 1.0 if path == "bound" else 0.0 if path == "plain" else break_even_fraction(n, d, k)
    began = time.perf_counter()
    bound = _Bound(x, p) if stats.break_even > 0 and k > 0 else None
    stats.deciding_s += time.perf_counter() - began
    wait, skip = 1, 0  # probe backoff: plain picks before the next probe, and its length
    sq = torch.empty(n, device=x.device, dtype=x.dtype)  # the plain path's distances
    rows: Tensor | None = None  # the bound path's block of gathered rows
    picks: list[int] = []
    picked_sq = torch.empty(k, device=x.device, dtype=x.dtype)  # each pick's distance, read once at the end
    for _ in range(k):
        i = int(torch.argmax(min_sq))
        picked_sq[len(picks)] = min_sq[i]
        picks.append(i)
        centre, centre_sq = x[i], x_sq[i]
        use_bound = bound is not None and path == "bound"
        if bound is not None and path == "auto":
            if skip > 0:
                skip -= 1
            else:
                stats.probes += 1
                began = time.perf_counter()
                use_bound = bound.candidate_fraction(i, min_sq) < stats.break_even
                stats.deciding_s += time.perf_counter() - began
                wait, skip = (1, 0) if use_bound else (min(2 * wait, MAX_WAIT), wait)
        if use_bound:
            maybe = bound.candidates(i, min_sq)
            if rows is None:
                rows = torch.empty(min(n, CHUNK), d, device=x.device, dtype=x.dtype)
            for start in range(0, len(maybe), CHUNK):  # a fixed block of gathered rows at a time
                index = maybe[start : start + CHUNK]
                block = torch.index_select(x, 0, index, out=rows[: len(index)])
                exact = torch.mv(block, centre).mul_(-2.0).add_(x_sq[index]).add_(centre_sq).clamp_min_(0.0)
                min_sq[index] = torch.minimum(min_sq[index], exact)
            stats.bound_picks += 1
            stats.measured += len(maybe)
        else:  # one mat-vec and an elementwise minimum, no gather
            torch.mv(x, centre, out=sq).mul_(-2.0).add_(x_sq).add_(centre_sq).clamp_min_(0.0)
            torch.minimum(min_sq, sq, out=min_sq)
            stats.plain_picks += 1
        min_sq[i] = -1.0
    stats.projected = bound is not None and bound.projected is not None
    stats.distances = picked_sq.sqrt().tolist()
    return picks


@register_strategy
class CoreSet(Strategy):
    name = "coreset"
    description = "greedy k-center on F's penultimate embeddings (Sener & Savarese, 2017)"
    requires = frozenset({Capability.EMBEDDINGS})

    def __init__(self) -> None:
        self.stats = KCenterStats()  # of the last selection: how many picks took each path

    def select(self, context: SelectionContext, k: int) -> Selection:
        self.stats = KCenterStats()
        picks = k_center_greedy(context.pool_embeddings, context.labeled, k, stats=self.stats)
        return Selection(indices=np.asarray(picks, dtype=np.int64), scores=np.asarray(self.stats.distances))
