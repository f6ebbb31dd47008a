"""Core-set selection (Sener & Savarese, 2017): greedy k-center on F's penultimate embeddings.

The labeled samples are the initial centres; each pick is the pool point farthest from its
nearest centre, and a min-distance vector [N] is updated after each pick (O(N) per pick).
The update skips points that a cheap lower bound proves cannot move closer: the distance between
projections onto a few principal axes never exceeds the true distance. The answer is the plain
greedy answer (up to float32 rounding in near-ties); only the work shrinks, which keeps a
500-pick, 60k-point selection in seconds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from strategies import register_strategy
from strategies.base import Selection, SelectionContext, Strategy
from tasks.base import Capability

CHUNK = 4096  # pool rows per distance block
PROJECTION_DIM = 32  # principal axes of the lower bound
SLACK = 1e-5  # relative rounding slack: a bound within it of the current distance is checked exactly


def _squared_min_distances(x: Tensor, centres: Tensor) -> Tensor:
    """Squared Euclidean distance from each row of ``x`` [N, d] to its nearest row of ``centres``."""
    out = torch.full((len(x),), float("inf"), device=x.device)
    if len(centres) == 0:
        return out
    c_sq = centres.pow(2).sum(1)
    for start in range(0, len(x), CHUNK):
        block = x[start : start + CHUNK]
        sq = block.pow(2).sum(1, keepdim=True) - 2.0 * block @ centres.T + c_sq
        out[start : start + CHUNK] = sq.min(dim=1).values.clamp_min_(0.0)
    return out


def _principal_axes(x: Tensor, dim: int) -> Tensor:
    """An orthonormal basis [d, dim] of the top principal axes of ``x`` (from a fixed subsample)."""
    dim = min(dim, x.shape[1])
    sample = x[torch.linspace(0, len(x) - 1, min(len(x), 8192), device=x.device).long()]
    centred = (sample - sample.mean(0)).double()  # float32 eigh fails to converge on some VGG features
    gram = centred.T @ centred
    gram /= gram.diagonal().sum().clamp_min(torch.finfo(gram.dtype).tiny)
    try:
        _, vectors = torch.linalg.eigh(gram)
    except torch.linalg.LinAlgError:  # no usable axes: a zero basis bounds nothing, every point is measured
        return torch.zeros(x.shape[1], dim, device=x.device, dtype=x.dtype)
    return vectors[:, -dim:].to(x.dtype).contiguous()


def k_center_greedy(embeddings: Tensor, labeled_idx, k: int) -> list[int]:
    """Greedy k-center: ``k`` new indices into ``embeddings`` [N, d], in the order picked.

    The rows ``labeled_idx`` are the initial centres and are never picked. Each pick maximises
    the distance to the nearest centre; ties go to the lowest index. With no labeled rows the
    first pick is index 0 (every distance is infinite).
    """
    x = embeddings.detach().float()
    labeled = torch.as_tensor(np.asarray(labeled_idx, dtype=np.int64).reshape(-1), device=x.device)
    available = len(x) - len(torch.unique(labeled))
    if k > available:
        raise ValueError(f"cannot pick {k} new points: only {available} are unlabeled")
    min_sq = _squared_min_distances(x, x[labeled])
    min_sq[labeled] = -1.0  # never picked
    projected = x @ _principal_axes(x, PROJECTION_DIM)
    projected_sq = projected.pow(2).sum(1)
    picks: list[int] = []
    for _ in range(k):
        i = int(torch.argmax(min_sq))
        picks.append(i)
        # |P(x) - P(x_i)|^2 <= |x - x_i|^2: points whose bound is not below their current
        # distance cannot come closer to the new centre; only the others are measured exactly
        bound = projected_sq + projected_sq[i] - 2.0 * (projected @ projected[i])
        slack = SLACK * (projected_sq + projected_sq[i])
        maybe = torch.nonzero(bound - slack < min_sq).squeeze(1)
        exact = (x[maybe] - x[i]).pow(2).sum(1)
        min_sq[maybe] = torch.minimum(min_sq[maybe], exact)
        min_sq[i] = -1.0
    return picks


@register_strategy
class CoreSet(Strategy):
    name = "coreset"
    description = "greedy k-center on F's penultimate embeddings (Sener & Savarese, 2017)"
    requires = frozenset({Capability.EMBEDDINGS})

    def select(self, context: SelectionContext, k: int) -> Selection:
        picks = k_center_greedy(context.pool_embeddings, context.labeled, k)
        return Selection(indices=np.asarray(picks, dtype=np.int64))
