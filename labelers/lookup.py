"""The labeler of a pool-based task: looks up the dataset's own labels by pool index."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class LookupLabeler:
    """Reveals the targets of pool samples; the harness calls it for every selected index."""

    def __init__(self, targets: Tensor) -> None:
        self.targets = targets

    def label(self, indices: np.ndarray) -> Tensor:
        """Targets of the pool samples ``indices`` (int64 [k]) -> [k, ...] on the targets' device."""
        return self.targets[torch.as_tensor(indices, dtype=torch.long, device=self.targets.device)]
