"""SI, sampling by interpolation (paper Algorithm 2): synthesize harder inputs and label them online.

Round 1 draws latent points z ~ N(0, I), generates G(z) and has the task's labeler label them
(for IVUS: threshold to a wall mask, FEM stress map). Each later round picks points from the
union of earlier z's at random, steps each towards a higher loss of F(G(z)) (z' = z + alpha * d)
and labels G(z'). A candidate the labeler rejects (e.g. a generated mask without a lumen) is
replaced by another step from another z, and counted. The test set stays real held-out data.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from strategies import register_strategy
from strategies.base import Selection, SelectionContext, SelectionError, Strategy
from strategies.latent import harder_points
from tasks.base import Capability

log = logging.getLogger(__name__)


class SynthesisError(SelectionError):
    """The labeler rejected too many synthesized candidates to fill a round."""


@register_strategy
class SamplingByInterpolation(Strategy):
    name = "si"
    description = "latent step towards higher loss, then synthesize G(z') and label it online (paper Alg. 2)"
    requires = frozenset({Capability.GENERATIVE, Capability.SYNTHETIC_LABELS})

    def __init__(self, alpha: float = 0.5, max_candidates: int = 20) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be positive (got {alpha})")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be at least 1 (got {max_candidates})")
        self.alpha = alpha
        self.max_candidates = max_candidates  # candidates tried per requested sample, at most
        self.latents: Tensor | None = None  # z of every training sample so far, in training-set order

    def state_dict(self) -> dict[str, Tensor]:
        """The latent points of the training set so far (later rounds step from them)."""
        return {} if self.latents is None else {"latents": self.latents}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.latents = state.get("latents")

    def initial(self, context: SelectionContext, k: int) -> Selection:
        latent_dim = context.generative.latent_dim

        def candidates(n: int) -> Tensor:
            z = context.rng.standard_normal((n, latent_dim))
            return torch.as_tensor(z, dtype=torch.float32, device=context.device)

        return self._synthesize(context, k, candidates)

    def select(self, context: SelectionContext, k: int) -> Selection:
        vae, task = context.generative, context.task

        def candidates(n: int) -> Tensor:
            rows = torch.as_tensor(context.rng.choice(len(self.latents), size=n, replace=n > len(self.latents)),
                                   device=context.device)
            return harder_points(context.model, vae.decode, task.loss, self.latents[rows], context.train_y[rows],
                                 self.alpha, context.rng)

        return self._synthesize(context, k, candidates)

    def _synthesize(self, context: SelectionContext, k: int, candidates) -> Selection:
        """Label G(z) for candidate batches until ``k`` are accepted; record their z."""
        inputs, targets, latents = [], [], []
        rejected, tried, reasons = 0, 0, {}
        while sum(map(len, inputs)) < k:
            need = k - sum(map(len, inputs))
            if tried + need > self.max_candidates * max(k, 1):
                raise SynthesisError(
                    f"si: the labeler rejected {rejected} of {tried} synthesized candidates, so a round of "
                    f"{k} could not be filled; reasons include: {'; '.join(list(reasons)[:3])}")
            z = candidates(need)
            with torch.no_grad():
                labels = context.label_inputs(context.generative.decode(z))
            ok = torch.as_tensor(labels.ok, device=z.device)
            inputs.append(labels.inputs[ok])
            targets.append(labels.targets[ok])
            latents.append(z[ok].detach())
            tried += need
            rejected += need - int(ok.sum())
            reasons.update(dict.fromkeys(labels.errors.values()))
        new = torch.cat(latents)
        self.latents = new if self.latents is None else torch.cat([self.latents, new])
        if rejected:
            log.info("si: the labeler rejected %d of %d candidates (%s)", rejected, tried, "; ".join(reasons))
        return Selection(inputs=torch.cat(inputs), targets=torch.cat(targets), latents=new, n_rejected=rejected)
