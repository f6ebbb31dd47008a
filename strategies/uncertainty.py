"""Uncertainty sampling: the unlabeled pool samples the current model is least sure about.

Scores come from modAL's measures on F's softmax over the pool (least confidence, margin,
entropy); the top ``k`` are taken, ties broken by the lower pool index.
"""

from __future__ import annotations

import numpy as np
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from strategies.base import Selection, SelectionContext, Strategy
from strategies.registry import register_strategy
from tasks.base import Capability

MEASURES = {
    "least-confidence": _proba_uncertainty,  # 1 - max_c p_c
    "margin": lambda probs: -_proba_margin(probs),  # -(p_top1 - p_top2)
    "entropy": _proba_entropy,  # -sum_c p_c log p_c
}


def uncertainty_scores(probs: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """Uncertainty of each row of class probabilities ``probs`` [N, C]; higher = more uncertain
    (float64 [N]). ``measure`` is one of ``least-confidence``, ``margin``, ``entropy``."""
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; choose one of {', '.join(MEASURES)}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be a 2-D array [N, C] of class probabilities, got shape {probs.shape}")
    return np.asarray(MEASURES[measure](probs), dtype=np.float64).reshape(len(probs))


@register_strategy
class UncertaintySampling(Strategy):
    name = "uncertainty"
    description = "the most uncertain pool samples under F's softmax (modAL: entropy, margin or least-confidence)"
    requires = frozenset({Capability.PROBABILITIES})

    def __init__(self, measure: str = "entropy") -> None:
        if measure not in MEASURES:
            raise ValueError(f"unknown uncertainty measure {measure!r}; choose one of {', '.join(MEASURES)}")
        self.measure = measure

    def select(self, context: SelectionContext, k: int) -> Selection:
        unlabeled = context.unlabeled
        probs = context.pool_probabilities[unlabeled].cpu().numpy()
        scores = uncertainty_scores(probs, self.measure)
        top = np.argsort(-scores, kind="stable")[:k]
        return Selection(indices=unlabeled[top], scores=scores[top])
