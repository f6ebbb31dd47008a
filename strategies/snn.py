"""SNN, sampling by nearest neighbour (paper Algorithm 1).

Each round: draw labeled samples at random, encode them (posterior mean p = E(x)), step each
towards a higher loss of F(G(p)) (p' = p + alpha * d), and take the unlabeled pool sample whose
latent code is nearest to p' (Euclidean, a KD-tree over the pool's codes); labeled samples and
samples already chosen this round are skipped for the next nearest. Following the paper's
discussion, a step that leaves the data manifold (p' farther from every pool code than
``manifold_quantile`` of pool codes are from their own nearest neighbour) is not pushed on:
that point is dropped and another labeled sample is drawn in its place.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from strategies.base import Selection, SelectionContext, Strategy
from strategies.latent import encode_in_batches, harder_points
from strategies.registry import register_strategy
from tasks.base import Capability

MAX_DRAWS = 10  # batches of labeled samples tried per round before off-manifold steps are accepted


class PoolCodes:
    """The pool's latent codes [N, latent] with KD-trees for the nearest-neighbour queries."""

    def __init__(self, codes: np.ndarray, manifold_quantile: float) -> None:
        self.codes = codes
        self.tree = cKDTree(codes)
        spacing = self.tree.query(codes, k=2)[0][:, 1]  # distance to the nearest other code
        self.radius = float(np.quantile(spacing, manifold_quantile))

    def on_manifold(self, points: np.ndarray) -> np.ndarray:
        """Whether each point [J, latent] lies within ``radius`` of some pool code (bool [J])."""
        return self.tree.query(points, k=1)[0] <= self.radius

    def nearest_available(self, points: np.ndarray, unavailable: np.ndarray) -> np.ndarray:
        """For each point in order, the nearest pool index not in ``unavailable`` (bool [N]) and
        not taken by an earlier point (int64 [J]); marks the picks unavailable."""
        available = np.flatnonzero(~unavailable)
        k = min(len(available), len(points))
        if k == 0:
            return np.empty(0, dtype=np.int64)
        _, ranked = cKDTree(self.codes[available]).query(points, k=k)
        ranked = ranked.reshape(len(points), k)
        picks = np.empty(len(points), dtype=np.int64)
        for j, row in enumerate(ranked):  # at most j earlier picks can block row j, and k > j
            candidates = available[row]
            picks[j] = candidates[np.argmax(~unavailable[candidates])]
            unavailable[picks[j]] = True
        return picks


@register_strategy
class SamplingByNearestNeighbour(Strategy):
    name = "snn"
    description = "latent step towards higher loss, then the nearest real pool sample (paper Alg. 1)"
    requires = frozenset({Capability.GENERATIVE})

    def __init__(self, alpha: float = 0.5, manifold_quantile: float = 0.99) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be positive (got {alpha})")
        if not 0 < manifold_quantile <= 1:
            raise ValueError(f"manifold_quantile must be in (0, 1] (got {manifold_quantile})")
        self.alpha = alpha
        self.manifold_quantile = manifold_quantile
        self._codes: PoolCodes | None = None

    def pool_codes(self, context: SelectionContext) -> PoolCodes:
        """The pool's codes under E, computed once per run (E and the pool never change); a cache,
        so a resumed run recomputes it and SNN has no state to checkpoint."""
        if self._codes is None:
            codes = encode_in_batches(context.generative.encode, context.pool_x)
            self._codes = PoolCodes(codes.double().cpu().numpy(), self.manifold_quantile)
        return self._codes

    def select(self, context: SelectionContext, k: int) -> Selection:
        vae, task = context.generative, context.task
        codes = self.pool_codes(context)
        unavailable = np.zeros(len(context.pool_x), dtype=bool)
        unavailable[context.labeled] = True
        picks: list[np.ndarray] = []
        gaps: list[np.ndarray] = []  # each pick's latent distance to the stepped point it was the nearest of
        dropped = 0
        for attempt in range(MAX_DRAWS + 1):
            need = k - sum(map(len, picks))
            if need == 0:
                break
            rows = context.rng.choice(len(context.train_x), size=need, replace=need > len(context.train_x))
            rows_t = torch.as_tensor(rows, device=context.device)
            x, y = context.train_x[rows_t], context.train_y[rows_t]
            with torch.no_grad():
                p = vae.encode(x)
            stepped = harder_points(context.model, vae.decode, task.loss, p, y, self.alpha, context.rng)
            stepped = stepped.double().cpu().numpy()
            keep = codes.on_manifold(stepped) if attempt < MAX_DRAWS else np.ones(need, dtype=bool)
            dropped += int((~keep).sum())
            chosen = codes.nearest_available(stepped[keep], unavailable)
            picks.append(chosen)
            gaps.append(np.linalg.norm(codes.codes[chosen] - stepped[keep][: len(chosen)], axis=1))
        return Selection(indices=np.concatenate(picks), scores=np.concatenate(gaps), n_rejected=dropped)
