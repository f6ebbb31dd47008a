"""Why a strategy wins or loses: how hard, balanced and novel its picks were when it chose them.

After a strategy selects (and before the picks join the training set), the harness measures the
picks under F as it was when the strategy looked at it; strategies never see these numbers or
the pool's labels. ``rounds.csv`` row t carries the diagnostics of the samples that joined the
training set for round t (chosen after round t - 1), as its ``select_s`` does; round 1's initial
set was chosen before any F was trained, so its cells are NaN (as they are with ``--no-diagnostics``).

- ``pick_loss``: mean task loss of the picks (pool samples with their labels, synthesized ones
  with their labeler's targets);
- ``pool_loss``: mean task loss of the unlabeled part of a fixed seeded sample of the pool (the
  whole pool when it has at most :data:`POOL_SAMPLE` samples), the same sample in every round
  and for every strategy of a repeat;
- ``pick_balance``: entropy of the picks' class histogram over log(C) (classification only):
  1 is every class equally often, 0 a single class;
- ``pick_novelty``: mean Euclidean distance in F's embedding space from each pick to its nearest
  training sample, over the same mean for the unlabeled part of that pool sample (a uniform draw):
  above 1, the picks lie farther from what F was trained on than a random pick would.

Nothing here draws from torch's or a strategy's random stream and F runs in eval mode, so a run
gives the same metric values with and without diagnostics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from bench.training import predict
from tasks.base import Capability, Task

#: Pool samples whose loss and embeddings stand for the unlabeled pool (all of it when smaller).
POOL_SAMPLE = 2048
#: The columns this module adds to ``rounds.csv``, in order.
COLUMNS = ("pick_loss", "pool_loss", "pick_balance", "pick_novelty")
_TAG = 0x6469_6167  # "diag": separates the pool sample's seed from every other use of a repeat's seed


@dataclass(frozen=True)
class Diagnostics:
    """The diagnostics of one selection (NaN where not measured); see the module docstring."""

    pick_loss: float = math.nan
    pool_loss: float = math.nan
    pick_balance: float = math.nan
    pick_novelty: float = math.nan

    def row(self) -> dict[str, float]:
        return asdict(self)


def pool_sample(seed: int, pool_size: int) -> np.ndarray:
    """The fixed pool indices (sorted int64) that stand for the pool in a repeat seeded ``seed``."""
    if pool_size <= POOL_SAMPLE:
        return np.arange(pool_size, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, _TAG]).choice(pool_size, POOL_SAMPLE, replace=False))


def diagnose(
    task: Task,
    model: nn.Module,
    pool_x: Tensor,
    pool_y: Tensor,
    labeled: np.ndarray,
    train_x: Tensor,
    picks_x: Tensor,
    picks_y: Tensor,
    seed: int,
    score_dtype: torch.dtype = torch.float32,
) -> Diagnostics:
    """The diagnostics of picks ``picks_x``/``picks_y`` [k, ...] under F (``model``), before they
    join the training set ``train_x`` [n, ...]; ``labeled`` are the pool indices already labeled.
    Losses are computed in float32, embeddings in ``score_dtype`` (as strategies score the pool)."""
    sample = pool_sample(seed, len(pool_x))
    unlabeled = sample[~np.isin(sample, labeled)]
    rows = torch.as_tensor(unlabeled, device=pool_x.device)
    pool_inputs, pool_targets = pool_x[rows], pool_y[rows]
    pick_outputs = predict(model, picks_x)
    values = {
        "pick_loss": float(task.loss(pick_outputs, picks_y)),
        "pool_loss": float(task.loss(predict(model, pool_inputs), pool_targets)) if len(rows) else math.nan,
    }
    if Capability.PROBABILITIES in task.capabilities and not picks_y.is_floating_point() and picks_y.dim() == 1:
        values["pick_balance"] = class_balance(picks_y, pick_outputs.shape[1])
    if Capability.EMBEDDINGS in task.capabilities and len(train_x) and len(rows):
        with torch.autocast(pool_x.device.type, dtype=score_dtype, enabled=score_dtype != torch.float32):
            seen, picked, drawn = (predict(model, x, fn=model.embed).float() for x in (train_x, picks_x, pool_inputs))
        values["pick_novelty"] = (nearest_distance(picked, seen).mean() / nearest_distance(drawn, seen).mean()).item()
    return Diagnostics(**values)


def class_balance(labels: Tensor, classes: int) -> float:
    """Entropy of the class histogram of ``labels`` (int64 [k]) over log(``classes``), in [0, 1]."""
    share = torch.bincount(labels.cpu(), minlength=classes).double() / len(labels)
    share = share[share > 0]
    return float(-(share * share.log()).sum() / math.log(classes))


def nearest_distance(queries: Tensor, references: Tensor, block: int = 1024) -> Tensor:
    """Euclidean distance (float64 [Q]) from each row of ``queries`` [Q, d] to its nearest row of
    ``references`` [R, d], ``block`` queries at a time. Computed in float32 through matrix products
    (fast; a distance far below the embeddings' norms, a near-duplicate, loses relative precision,
    which a mean over many picks does not notice)."""
    references = references.flatten(1).float()
    return torch.cat(
        [
            torch.cdist(queries[i : i + block].flatten(1).float(), references).amin(1)
            for i in range(0, len(queries), block)
        ]
    ).double()
