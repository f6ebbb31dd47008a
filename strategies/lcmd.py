"""LCMD, largest cluster maximum distance (Holzmüller, Zaverkin, Kästner and Steinwart, JMLR 2023,
"A Framework and Benchmark for Deep Batch Active Learning for Regression"), on F's penultimate
features.

The centres are the labeled samples and the picks so far. Every pool sample belongs to the
cluster of its nearest centre; the cluster whose squared distances to its centre sum largest is
taken, and its sample farthest from the centre is the next pick (and a new centre). Repeated k
times.

Kept from the paper and the authors' code (``bmdal_reg``, ``LargestClusterMaxDistSelectionMethod``
in ``bmdal/selection.py``, its defaults): the cluster size is the sum of squared distances
(``dist_weight_mode='sq-dist'``); the training set's samples are the initial centres (TP-mode,
``sel_with_train=True``); a sample moves to a new centre only when strictly closer (ties keep
the earlier centre: the initial centres in the order of ``context.labeled``, then the picks in
order); every cluster whose size equals the largest is eligible, and among their samples the
farthest is picked, the lowest pool index on ties; with no centre at all the first pick is the
sample of largest norm. Changed or left open:

* the features: the authors' experiments transform F's last-layer features (sketched gradient
  kernels, scaling); here they are F's penultimate features as they are (``context.pool_embeddings``),
  the same features as core-set's, as the issue asks;
* the initial centres are the labeled pool samples (``context.labeled``), not the whole training
  set (here they are the same samples unless a task trains on samples outside the pool);
* labeled samples and picks are never picked (the authors exclude their picks; their training
  samples are not in the pool). Where every cluster has size 0 (every remaining sample lies on a
  centre) this picks the lowest-index sample left, as the authors' rule does;
* the authors' fill-up with random samples when a pick fails never happens here (a pool sample
  that is not a centre is always eligible).

Memory and time: O(N d) for the embeddings' squared norms and the initial distances (blocks of
core-set's size), then per pick core-set's plain update (one mat-vec over the pool, an
elementwise minimum) plus the assignment: the distance vector [N], the assignment [N] (int64:
each sample's centre, numbered 0, 1, ... in the order above) and the cluster sizes
[centres] (``scatter_add_``, deterministic on CUDA too). Never N x N nor N x centres.

Scores: each pick's squared distance to its cluster's centre (what it maximised within the
largest cluster); the first pick without centres: its squared norm. No options.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from strategies.base import Selection, SelectionContext, Strategy
from strategies.coreset import nearest_centre_distances, squared_norms
from strategies.registry import register_strategy
from tasks.base import Capability


def largest_cluster_max_distance(embeddings: Tensor, labeled_idx, k: int) -> tuple[list[int], list[float]]:
    """LCMD: ``k`` new indices into ``embeddings`` [N, d] in pick order, and each pick's squared
    distance to its cluster's centre when picked (see the module's docstring). The rows
    ``labeled_idx`` (in that order) are the initial centres and are never picked."""
    x = embeddings.detach().float()
    x = x if x.is_contiguous() else x.contiguous()
    n = len(x)
    labeled = torch.as_tensor(np.asarray(labeled_idx, dtype=np.int64).reshape(-1), device=x.device)
    taken = torch.zeros(n, dtype=torch.bool, device=x.device)  # centres: never picked
    taken[labeled] = True
    n_taken = int(taken.sum())
    if k > n - n_taken:
        raise ValueError(f"cannot pick {k} new points: only {n - n_taken} are unlabeled")
    picks: list[int] = []
    scores: list[float] = []
    if k <= 0:
        return picks, scores
    x_sq = squared_norms(x)
    min_sq, assign = nearest_centre_distances(x, x_sq, labeled)
    n_centres = len(labeled)
    if n_centres:
        min_sq[labeled] = 0.0  # a centre is its own nearest (its distance exact, not rounded)
        assign[labeled] = torch.arange(n_centres, device=x.device)
    sizes = torch.empty(n_centres + k, device=x.device, dtype=x.dtype)
    neg_inf = torch.tensor(float("-inf"), device=x.device, dtype=x.dtype)
    score, sq = torch.empty(n, device=x.device, dtype=x.dtype), torch.empty(n, device=x.device, dtype=x.dtype)
    closer = torch.empty(n, device=x.device, dtype=torch.bool)
    for _ in range(k):
        if n_centres == 0:  # no centre yet: the largest norm
            i = int(torch.argmax(x_sq))
            scores.append(float(x_sq[i]))
        else:
            size = sizes[:n_centres].zero_().scatter_add_(0, assign, min_sq)
            largest = size[assign] == size.max()
            torch.where(largest & ~taken, min_sq, neg_inf, out=score)
            i = int(torch.argmax(score))
            scores.append(float(min_sq[i]))
        picks.append(i)
        taken[i] = True
        # core-set's plain update, and the samples strictly closer to the new centre join it
        torch.mv(x, x[i], out=sq).mul_(-2.0).add_(x_sq).add_(x_sq[i]).clamp_min_(0.0)
        sq[i] = 0.0
        torch.lt(sq, min_sq, out=closer)
        assign.masked_fill_(closer, n_centres)
        torch.minimum(min_sq, sq, out=min_sq)
        n_centres += 1
    return picks, scores


@register_strategy
class LargestClusterMaxDistance(Strategy):
    name = "lcmd"
    description = (
        "the farthest sample of the largest nearest-centre cluster on F's penultimate features "
        "(LCMD; Holzmüller et al., 2023)"
    )
    requires = frozenset({Capability.EMBEDDINGS})

    def select(self, context: SelectionContext, k: int) -> Selection:
        picks, scores = largest_cluster_max_distance(context.pool_embeddings, context.labeled, k)
        return Selection(indices=np.asarray(picks, dtype=np.int64), scores=np.asarray(scores, dtype=np.float64))
