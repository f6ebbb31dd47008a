"""ASAL, adversarial sampling for active learning: synthesize samples F is unsure of, label real
pool samples that look like them.

Mayer, C. and Timofte, R., "Adversarial Sampling for Active Learning", IEEE/CVF Winter Conference
on Applications of Computer Vision (WACV), 2020 (arXiv:1808.06671).

Each round: draw latent points z ~ N(0, I) (the generator's prior) from ``context.rng``; move each
by ``steps`` gradient steps on z towards a higher entropy H(F(G(z))) of F's softmax (F in eval
mode, F and G unchanged; only z moves), keeping for each point the highest-entropy z met on its
path; then retrieve, for each synthesized sample in order of its entropy (highest first), the
nearest unlabeled pool sample not already taken this round, in the feature space ``space``:

* ``"model"`` (default): F's penultimate features (``context.embed`` of G(z) against the pool's
  ``context.pool_embeddings``), Euclidean; a blocked torch search keeps each query's nearest
  ``TOP`` available rows (O(N d) memory, never N x N) and searches again, with twice as many,
  for the queries whose rows earlier queries took;
* ``"latent"``: the generator's latent codes (z against the pool's codes E(x), Euclidean), with
  :class:`strategies.snn.PoolCodes` (a KD-tree, built once per run: E and the pool never change).

What was kept from the paper: the prior draw, gradient steps on z that raise F's predictive
entropy of the synthesized sample, and the retrieval of real pool samples by nearest neighbour
(no synthetic sample is ever labeled), one synthesized sample per pick by default.
What was changed: the paper trains a GAN of its own (a Wasserstein GAN); here the generator is the
task's cached generative model (the MNIST VAE, CIFAR-10's alpha-GAN; latent_dim 3). Its steps are
normalised (z <- z + step * grad / |grad|, as SNN's alpha; a zero gradient, where F saturates,
takes a random unit direction from ``context.rng``), so ``step`` is in latent units (the prior's
standard deviation is 1) and scale-free in F; the path length is at most ``steps * step``, which
keeps z within about one prior standard deviation of its draw by default. Keeping the best point
of each path makes a step size that overshoots harmless.
What was left open or chosen here: the paper matched in features fixed for the whole run (raw
pixels, autoencoder features, the GAN discriminator's features) so that a nearest-neighbour index
is built once and each query is sub-linear; this benchmark's generative models have no
discriminator for every task, and the choice here is between F's features (what F itself finds
alike; recomputed every round, so the search is linear in the pool, like uncertainty sampling)
and the latent codes (fixed; sub-linear as in the paper, but only 3-d, where many pool samples
share a neighbourhood). The default ``"model"`` is the one whose picks F finds the more
uncertain: on an MNIST subset of 20,000 (F trained 5 epochs on 1,000 random labels, 90.5% test
accuracy; the VAE of the task; k = 300; 3 seeds), the picks' mean entropy under F was 0.876 nats
(+- 0.014) in F's features, 0.681 (+- 0.014) in the latent codes and 0.259 (+- 0.015) for random
picks (the pool's 300 most uncertain: 1.491); the synthesized samples' 1.225, up from 0.505 at
their prior draws. On 5,000 with 200 labels (60.4%, k = 100) likewise: 2.061, 1.977 and 1.560
(most uncertain 2.165). Longer paths raise both further (steps x step = 10 x 0.5: synthesized
1.378, picks 0.971) at the cost of drifting from the prior; the default keeps each point within
one prior standard deviation of its draw. A selection took 3.5-4.0 s (model) and 1.4-1.8 s
(latent, the pool's codes and KD-tree included) on one CPU thread at that size.
``space="latent"`` is the paper's sub-linear variant. ``candidates`` (default 1) synthesizes
``candidates * k`` points and keeps the ``k`` of highest entropy (an ablation of ours).

``Selection.scores`` holds each pick's synthesized sample's entropy H(F(G(z))) in nats, the
quantity the queries were ranked by (not the pick's own entropy).

Requirements: class probabilities (the entropy) and the generative model always; F's embeddings
for ``space="model"`` only (``requires`` declares all three, :meth:`AdversarialSampling.requirements`
says which the options need).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from strategies.base import CapabilityError, GenerativeModel, Selection, SelectionContext, Strategy
from strategies.latent import encode_in_batches, unit_directions
from strategies.registry import register_strategy
from strategies.snn import PoolCodes
from tasks.base import Capability

SPACES = ("model", "latent")  # where synthesized samples are matched to pool samples
TOP = 64  # nearest available rows kept per query at first (doubled on each search again)
MAX_TOP = 1024  # at most this many rows per query in one search
QUERY_CHUNK = 256  # queries per block of the distance search
ROW_CHUNK = 4096  # pool rows per block of the distance search


def entropy_of_logits(logits: Tensor) -> Tensor:
    """Entropy -sum_c p_c log p_c (nats) of softmax(``logits``) [B, C], per row: float [B]."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(1)


def entropy_ascent(
    model: nn.Module,
    generate: Callable[[Tensor], Tensor],
    z: Tensor,
    steps: int,
    step: float,
    rng: np.random.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Move latent points ``z`` [J, d] by ``steps`` normalised gradient steps of length ``step``
    (latent units) towards a higher entropy of softmax(F(G(z))).

    Returns, per point, the highest-entropy z met on its path (the start included) [J, d], that
    entropy [J] and the start's entropy [J] (nats, float32). F runs in eval mode (its mode is
    restored after); only z gets gradients, so F and G are unchanged. A point whose gradient is
    zero (F saturated) steps in a random unit direction drawn from ``rng``. Each point's entropy
    depends on its own z only (eval mode: no batch statistics), so batches do not interact.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            current = z.detach().clone().requires_grad_(steps > 0)
            h = entropy_of_logits(model(generate(current)))
            best, best_h, start_h = current.detach().clone(), h.detach().clone(), h.detach().clone()
            for i in range(steps):
                (grad,) = torch.autograd.grad(h.sum(), current)
                current = (current.detach() + step * unit_directions(grad, rng)).requires_grad_(i + 1 < steps)
                h = entropy_of_logits(model(generate(current)))
                better = h.detach() > best_h
                best[better] = current.detach()[better]
                best_h = torch.where(better, h.detach(), best_h)
    finally:
        model.train(was_training)
    return best, best_h, start_h


def generative_model(context: SelectionContext) -> GenerativeModel:
    """The task's generative model; CapabilityError when the context has none."""
    if context.generative is None:
        raise CapabilityError(Capability.GENERATIVE, "asal (context.generative)", context.task.name)
    return context.generative


def _nearest_rows(queries: Tensor, rows: Tensor, rows_sq: Tensor, excluded: Tensor, m: int) -> Tensor:
    """For each query [J, D], the indices of its ``m`` nearest ``rows`` [N, D] (squared norms
    ``rows_sq`` [N]) that are not ``excluded`` (bool [N]), nearest first: int64 [J, m] on the
    rows' device. Blocks of QUERY_CHUNK queries by ROW_CHUNK rows: memory O(QUERY_CHUNK *
    (ROW_CHUNK + m)) beyond the inputs. ``m`` must not exceed the rows not excluded."""
    out = torch.empty(len(queries), m, dtype=torch.int64, device=rows.device)
    for q in range(0, len(queries), QUERY_CHUNK):
        block = queries[q : q + QUERY_CHUNK]
        block_sq = block.pow(2).sum(1, keepdim=True)
        best_d = torch.empty(len(block), 0, device=rows.device)
        best_i = torch.empty(len(block), 0, dtype=torch.int64, device=rows.device)
        for r in range(0, len(rows), ROW_CHUNK):
            d = torch.addmm(rows_sq[r : r + ROW_CHUNK], block, rows[r : r + ROW_CHUNK].T, alpha=-2.0).add_(block_sq)
            d.masked_fill_(excluded[r : r + ROW_CHUNK], float("inf"))
            index = torch.arange(r, r + d.shape[1], device=rows.device).expand(len(block), -1)
            both_d, both_i = torch.cat([best_d, d], 1), torch.cat([best_i, index], 1)
            keep = torch.topk(both_d, min(m, both_d.shape[1]), dim=1, largest=False, sorted=True).indices
            best_d, best_i = both_d.gather(1, keep), both_i.gather(1, keep)
        out[q : q + QUERY_CHUNK] = best_i
    return out


def nearest_available_rows(queries: Tensor, rows: Tensor, unavailable: np.ndarray) -> np.ndarray:
    """For each query [J, D] in order, the nearest of ``rows`` [N, D] (Euclidean) that is not
    ``unavailable`` (bool [N]) nor taken by an earlier query: int64 [J]; marks the picks
    unavailable. Each query takes the first free row of its nearest TOP (searched blockwise); the
    queries from the first whose rows were all taken are searched again among the free rows, with
    twice as many (up to MAX_TOP), so memory stays O(N + J * MAX_TOP) beyond the inputs."""
    rows = rows.float()
    queries = queries.float().to(rows.device)
    rows_sq = rows.pow(2).sum(1)
    picks = np.empty(len(queries), dtype=np.int64)
    m, j = TOP, 0
    while j < len(queries):
        free = int((~unavailable).sum())
        if free < len(queries) - j:
            raise ValueError(f"cannot match {len(queries) - j} more queries: only {free} pool rows are available")
        m = min(m, free)
        excluded = torch.as_tensor(unavailable, device=rows.device)
        ranked = _nearest_rows(queries[j:], rows, rows_sq, excluded, m).cpu().numpy()
        start = j
        for row in ranked:  # in order: each takes its nearest row that no earlier query took
            open_ = ~unavailable[row]
            if not open_.any():
                break  # all of its m rows went to earlier queries: search again from this query
            picks[j] = row[np.argmax(open_)]
            unavailable[picks[j]] = True
            j += 1
        if j - start < len(ranked):
            m = min(2 * m, MAX_TOP)
    return picks


@register_strategy
class AdversarialSampling(Strategy):
    name = "asal"
    description = (
        "latent points stepped towards F's maximum entropy, then the nearest real pool samples "
        "(Mayer & Timofte, WACV 2020)"
    )
    requires = frozenset({Capability.PROBABILITIES, Capability.GENERATIVE, Capability.EMBEDDINGS})

    @classmethod
    def requirements(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """Class probabilities and the generative model always; F's embeddings for
        ``space="model"`` (the default) only."""
        if options.get("space", "model") == "latent":
            return frozenset({Capability.PROBABILITIES, Capability.GENERATIVE})
        return frozenset(cls.requires)

    def __init__(self, steps: int = 10, step: float = 0.1, space: str = "model", candidates: int = 1) -> None:
        """``steps``: gradient steps per latent point (0: the prior draws as they are);
        ``step``: the length of each step in latent units (> 0); ``space``: where synthesized
        samples meet pool samples, ``"model"`` (F's penultimate features) or ``"latent"`` (the
        generator's latent codes); ``candidates``: latent points drawn per pick (>= 1), the
        ``k`` of highest entropy kept."""
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be a whole number >= 0 (got {steps!r})")
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not 0 < step < float("inf"):
            raise ValueError(f"step must be a positive number of latent units (got {step!r})")
        if space not in SPACES:
            raise ValueError(f"space must be one of {', '.join(SPACES)} (got {space!r})")
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
            raise ValueError(f"candidates must be a whole number >= 1 (got {candidates!r})")
        self.steps = steps
        self.step = float(step)
        self.space = space
        self.candidates = candidates
        self._codes: PoolCodes | None = None

    def pool_codes(self, context: SelectionContext) -> PoolCodes:
        """The pool's latent codes E(x) with a KD-tree, computed once per run (E and the pool
        never change); a cache, so a resumed run rebuilds it and nothing is checkpointed."""
        if self._codes is None:
            codes = encode_in_batches(generative_model(context).encode, context.pool_x)
            self._codes = PoolCodes(codes.double().cpu().numpy(), manifold_quantile=1.0)
        return self._codes

    def synthesize(self, context: SelectionContext, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` latent points drawn from N(0, I) and stepped towards a higher entropy, in
        batches of ``context.batch_size``: the points [n, d], their entropies [n] and their
        starting points' entropies [n] (nats)."""
        vae = generative_model(context)
        z = torch.as_tensor(context.rng.standard_normal((n, vae.latent_dim)), dtype=torch.float32)
        z = z.to(context.device)
        parts = [
            entropy_ascent(context.model, vae.decode, z[i : i + context.batch_size], self.steps, self.step, context.rng)
            for i in range(0, n, context.batch_size)
        ]
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]

    def select(self, context: SelectionContext, k: int) -> Selection:
        context.need(Capability.PROBABILITIES, "asal's entropy of F(G(z))")
        unavailable = np.zeros(len(context.pool_x), dtype=bool)
        unavailable[context.labeled] = True
        if k > int((~unavailable).sum()):
            raise ValueError(f"cannot pick {k} new samples: only {int((~unavailable).sum())} are unlabeled")
        if k == 0:
            return Selection(indices=np.empty(0, dtype=np.int64), scores=np.empty(0))
        z, entropy, _ = self.synthesize(context, self.candidates * k)
        order = torch.sort(entropy, descending=True, stable=True).indices[:k]  # highest entropy chooses first
        z, entropy = z[order], entropy[order]
        if self.space == "latent":
            picks = self.pool_codes(context).nearest_available(z.double().cpu().numpy(), unavailable)
        else:
            with torch.no_grad():
                synthesized = generative_model(context).decode(z)
            picks = nearest_available_rows(context.embed(synthesized), context.pool_embeddings, unavailable)
        return Selection(indices=picks, scores=entropy.cpu().numpy())
