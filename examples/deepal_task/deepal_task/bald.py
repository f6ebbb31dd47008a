"""The strategy ``bald``: Bayesian Active Learning by Disagreement with Monte Carlo dropout
(Houlsby et al. 2011; Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data",
ICML 2017), as DeepAL's ``BALDDropout``.

F scores the unlabeled pool in ``passes`` stochastic forward passes with its dropout layers
active (``context.mc_probabilities``); a sample's score is the mutual information between its
label and the weights, the entropy of the mean prediction minus the mean entropy of the passes.
The ``k`` highest are taken, ties broken by the lower pool index. It needs class probabilities
and dropout in F, so the harness refuses it on a task without dropout (the built-in ``mnist``'s
LeNet has none) before any work.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from strategies import register_strategy
from strategies.base import Selection, SelectionContext, Strategy
from tasks.base import Capability


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Entropy (nats) of the distributions ``probs`` along ``dim``; 0 log 0 counts as 0."""
    return -torch.special.xlogy(probs, probs).sum(dim)


def mutual_information(probs: Tensor) -> Tensor:
    """BALD's score of each sample from Monte Carlo class probabilities [passes, N, C]:
    H(mean over passes) - mean over passes of H, float64 [N] (0 when every pass agrees)."""
    probs = probs.double()
    return entropy(probs.mean(0)) - entropy(probs).mean(0)


@register_strategy
class BALD(Strategy):
    name = "bald"
    description = "BALD: the largest mutual information between label and weights under MC dropout (Gal et al. 2017)"
    requires = frozenset({Capability.PROBABILITIES, Capability.DROPOUT})

    def __init__(self, passes: int = 10) -> None:
        if not isinstance(passes, int) or passes < 1:
            raise ValueError(f"passes (Monte Carlo dropout passes) must be a positive integer, got {passes!r}")
        self.passes = passes

    def select(self, context: SelectionContext, k: int) -> Selection:
        unlabeled = context.unlabeled
        x = context.pool_x[torch.as_tensor(unlabeled, device=context.device)]
        scores = mutual_information(context.mc_probabilities(self.passes, x)).cpu().numpy()
        top = np.argsort(-scores, kind="stable")[:k]
        return Selection(indices=unlabeled[top])
