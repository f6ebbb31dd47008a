"""BADGE (Ash, Zhang, Krishnamurthy, Langford and Agarwal, ICLR 2020, "Deep Batch Active Learning
by Diverse, Uncertain Gradient Lower Bounds"): k-means++ seeding over the gradient embeddings of
F's last layer under its own predicted label.

Each unlabeled sample's gradient embedding is g_i = (p_i - onehot(argmax p_i)) (x) h_i, the
gradient of the cross-entropy under the predicted label with respect to the last linear layer's
weights (p_i: F's softmax [C]; h_i: F's penultimate features [d], the input of that layer). The
first pick is the sample of largest ||g_i||; each later one is drawn with probability
proportional to D^2, its squared distance to the nearest pick so far (k-means++ seeding).

Kept from the paper and the authors' code (JordanAsh/badge, ``query_strategies/
badge_sampling.py``, ``init_centers``): the embedding under the predicted label (the authors use
onehot - p, the same distances); the first centre is the largest-norm embedding (argmax, lowest
index on ties); later centres are drawn proportional to D^2; only the unlabeled samples are
candidates and centres (the authors embed ``idxs_unlabeled`` only; the labeled samples play no
part, not even as initial centres). Changed, with the picks' distribution unchanged:

* the [N, C d] embeddings are never built. <g_i, g_j> = <a_i, a_j> <h_i, h_j> with
  a = p - onehot, so D^2 to a new centre c is ||a_i||^2 ||h_i||^2 + ||g_c||^2
  - 2 <a_i, a_c> <h_i, h_c>: one mat-vec over A [N, C] and one over H [N, d] per pick, float32 on
  the device, clamped at 0; memory O(N (C + d)) (A and a few vectors of length N);
* the draw: one uniform u from ``context.rng`` per pick, and the pick is the first index whose
  float64 cumulative D^2 exceeds u times the total (chosen samples have D^2 = 0 and are never
  drawn; the authors redraw until they get a new index, which only a rounding error can need);
* where every remaining D^2 is 0 (e.g. every prediction one-hot-confident: g = 0), the authors'
  code stops in the debugger; here the pick is drawn uniformly from the samples not yet picked
  (``rng.integers``), its score 0.

Scores: each pick's D^2 when it was drawn (squared gradient-embedding distance to the nearest
earlier pick; the first pick's ||g||^2), in units of (probability x feature)^2. No options: the
paper has no hyperparameter. Applies where F gives class probabilities and embeddings (MNIST,
CIFAR-10); the harness refuses regression tasks (IVUS).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from strategies.base import Selection, SelectionContext, Strategy
from strategies.coreset import squared_norms
from strategies.registry import register_strategy
from tasks.base import Capability


def _draw(d2: Tensor, cdf: Tensor, rng: np.random.Generator) -> int | None:
    """An index drawn with probability proportional to ``d2`` [N] (float32, >= 0), from one uniform
    of ``rng`` (float64 cumulative sum into ``cdf`` [N]); None, drawing nothing, when all are 0."""
    torch.cumsum(d2, 0, dtype=torch.float64, out=cdf)
    total = float(cdf[-1])
    if not total > 0.0:
        return None
    target = min(rng.random() * total, float(np.nextafter(total, 0.0)))  # below the total: a positive weight
    return int(torch.searchsorted(cdf, torch.tensor([target], dtype=torch.float64, device=cdf.device), right=True))


def badge_seeding(
    probabilities: Tensor, embeddings: Tensor, candidates: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[list[int], list[float]]:
    """k-means++ seeding over the gradient embeddings (p - onehot(argmax p)) (x) h of the rows
    ``candidates`` (int64, pool indices) of ``probabilities`` [N, C] and ``embeddings`` [N, d],
    without building them: ``k`` pool indices in pick order and each pick's D^2 when drawn (see
    the module's docstring). Only the candidates are picked; the other rows play no part."""
    n = len(probabilities)
    if len(embeddings) != n:
        raise ValueError(f"{n} rows of probabilities but {len(embeddings)} of embeddings")
    if k > len(candidates):
        raise ValueError(f"cannot pick {k} samples: only {len(candidates)} are unlabeled")
    if k <= 0:
        return [], []
    h = embeddings.detach().float()
    h = h if h.is_contiguous() else h.contiguous()
    a = probabilities.detach().float().clone()  # [N, C]: p - onehot(argmax p)
    a[torch.arange(n, device=a.device), a.argmax(1)] -= 1.0
    g_sq = squared_norms(a).mul_(squared_norms(h))  # ||g_i||^2 [N]
    index = torch.as_tensor(np.asarray(candidates, dtype=np.int64), device=a.device)
    others = torch.ones(n, dtype=torch.bool, device=a.device)
    others[index] = False
    first = torch.where(others, torch.tensor(-1.0, device=a.device), g_sq).argmax()  # largest ||g||, lowest index
    picks, scores = [int(first)], [float(g_sq[first])]
    d2 = torch.full((n,), float("inf"), device=a.device)
    d2[others] = 0.0  # never drawn
    chosen = torch.zeros(n, dtype=torch.bool, device=a.device)
    dot_a, sq = torch.empty(n, device=a.device), torch.empty(n, device=a.device)
    cdf = torch.empty(n, dtype=torch.float64, device=a.device)
    for _ in range(k - 1):
        c = picks[-1]
        chosen[c] = True
        # D^2 to the new centre: ||g_i||^2 + ||g_c||^2 - 2 <a_i, a_c> <h_i, h_c>
        torch.mv(a, a[c], out=dot_a)
        torch.mv(h, h[c], out=sq).mul_(dot_a).mul_(-2.0).add_(g_sq).add_(g_sq[c]).clamp_min_(0.0)
        torch.minimum(d2, sq, out=d2)
        d2[c] = 0.0
        i = _draw(d2, cdf, rng)
        if i is None:  # every remaining D^2 is 0: uniformly from the candidates not yet picked
            rest = index[~chosen[index]]
            i, score = int(rest[int(rng.integers(len(rest)))]), 0.0
        else:
            score = float(d2[i])
        picks.append(i)
        scores.append(score)
    return picks, scores


@register_strategy
class Badge(Strategy):
    name = "badge"
    description = (
        "k-means++ seeding over last-layer gradient embeddings under the predicted label (BADGE; Ash et al., 2020)"
    )
    requires = frozenset({Capability.PROBABILITIES, Capability.EMBEDDINGS})

    def select(self, context: SelectionContext, k: int) -> Selection:
        picks, scores = badge_seeding(
            context.pool_probabilities, context.pool_embeddings, context.unlabeled, k, context.rng
        )
        return Selection(indices=np.asarray(picks, dtype=np.int64), scores=np.asarray(scores, dtype=np.float64))
