"""Random sampling: the baseline every strategy is compared with (the paper's "Rand")."""

from __future__ import annotations

from strategies.base import Selection, SelectionContext, Strategy
from strategies.registry import register_strategy


@register_strategy
class RandomSampling(Strategy):
    name = "random"
    description = "uniformly random unlabeled pool samples (the paper's Rand baseline)"

    def select(self, context: SelectionContext, k: int) -> Selection:
        return Selection(indices=context.rng.choice(context.unlabeled, size=k, replace=False))
