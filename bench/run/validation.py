"""The labeled validation split of a repeat (``--validation N``): N pool samples drawn before the
initial set, the same for every strategy of the repeat, scored after every round
(``val_value`` in ``rounds.csv``) and hidden from the strategies.

Strategies never see the validation samples: their selection context holds the pool without them
(:attr:`HeldOut.pool_x`), so no strategy, a plug-in's included, can pick one, count it as covered or
learn from its inputs; the harness maps their picks back to pool indices. Their labels count as
spent: a run with ``--validation N`` has used ``n_labeled + N`` labels by round t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tasks.base import TaskData

#: Tells the validation draw's random stream from the initial set's (seeded by the repeat's seed alone).
VALIDATION_STREAM = 0x76616C  # "val"


def validation_indices(seed: int, pool_size: int, n: int) -> np.ndarray:
    """The validation set of the repeat with seed ``seed``: ``n`` pool indices, ascending (int64 [n])."""
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    return np.sort(rng.choice(pool_size, size=n, replace=False)).astype(np.int64)


@dataclass
class HeldOut:
    """A repeat's validation samples and the pool the strategies see without them."""

    indices: np.ndarray  # int64 [n]: pool indices of the validation samples, ascending
    selectable: np.ndarray  # int64 [N - n]: row i of the strategies' pool is pool sample selectable[i]
    position: np.ndarray  # int64 [N]: a pool index's row in the strategies' pool, -1 for a validation sample
    pool_x: Tensor  # [N - n, ...] the strategies' pool, on the data's device
    x: Tensor  # [n, ...] the validation inputs
    y: Tensor  # [n, ...] their labels

    @classmethod
    def draw(cls, data: TaskData, seed: int, n: int) -> HeldOut | None:
        """The validation split of ``n`` samples of the repeat seeded ``seed``; None for ``n == 0``."""
        if n == 0:
            return None
        size = len(data.pool_x)
        indices = validation_indices(seed, size, n)
        keep = np.ones(size, dtype=bool)
        keep[indices] = False
        selectable = np.flatnonzero(keep).astype(np.int64)
        position = np.full(size, -1, dtype=np.int64)
        position[selectable] = np.arange(len(selectable))
        device = data.pool_x.device
        rows, held = torch.as_tensor(selectable, device=device), torch.as_tensor(indices, device=device)
        return cls(indices, selectable, position, data.pool_x[rows], data.pool_x[held], data.pool_y[held])

    def to_pool(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the strategies' pool (int64, each in 0..N-n-1) as pool indices."""
        return self.selectable[rows]

    def to_rows(self, indices: np.ndarray) -> np.ndarray:
        """Pool indices (none of them a validation sample) as rows of the strategies' pool."""
        return self.position[indices]
