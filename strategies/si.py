"""SI, sampling by interpolation (paper Algorithm 2): synthesize harder inputs and label them online.

Round 1 draws latent points z ~ N(0, I), generates G(z) and has the task's labeler label them
(for IVUS: threshold to a wall mask, FEM stress map). Each later round picks points from the
union of earlier z's at random, steps each towards a higher loss of F(G(z)) (z' = z + alpha * d)
and labels G(z'). A candidate the labeler rejects (e.g. a generated mask without a lumen) is
replaced by another step from another z, and counted. The test set stays real held-out data.

Two options test whether SI's results come from the method or from the generator's latent space:
``start="pool"`` begins from the shared real initial set instead (its codes E(x) are the first
z's), so round 1 equals every other strategy's; ``prior="aggregate"`` draws round 1's z from a
Gaussian fitted to the pool's codes instead of N(0, I) (the prior a VAE's posterior may not match).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from strategies.base import Selection, SelectionContext, SelectionError, Strategy
from strategies.latent import encode_in_batches, gaussian_fit, harder_points
from strategies.registry import register_strategy
from tasks.base import Capability

log = logging.getLogger(__name__)


STARTS = ("prior", "pool")  # where round 1's samples come from
PRIORS = ("standard", "aggregate")  # the distribution of round 1's z under start="prior"


class SynthesisError(SelectionError):
    """The labeler rejected too many synthesized candidates to fill a round."""


@register_strategy
class SamplingByInterpolation(Strategy):
    name = "si"
    description = "latent step towards higher loss, then synthesize G(z') and label it online (paper Alg. 2)"
    requires = frozenset({Capability.GENERATIVE, Capability.SYNTHETIC_LABELS})

    def __init__(
        self, alpha: float = 0.5, max_candidates: int = 20, start: str = "prior", prior: str = "standard"
    ) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be positive (got {alpha})")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be at least 1 (got {max_candidates})")
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)} (got {start!r})")
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)} (got {prior!r})")
        if start == "pool" and prior != "standard":
            raise ValueError(
                f"prior={prior!r} has no effect with start='pool' (round 1 takes the shared real "
                f"initial set, no prior draw); drop one of the two"
            )
        self.alpha = alpha
        self.max_candidates = max_candidates  # candidates tried per requested sample, at most
        self.start = start
        self.prior = prior
        self.latents: Tensor | None = None  # z of every training sample so far, in training-set order

    def state_dict(self) -> dict[str, Tensor]:
        """The latent points of the training set so far (later rounds step from them)."""
        return {} if self.latents is None else {"latents": self.latents}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.latents = state.get("latents")

    def initial(self, context: SelectionContext, k: int) -> Selection | None:
        if self.start == "pool":
            return None  # the shared real initial set; select() encodes it
        latent_dim = context.generative.latent_dim
        if self.prior == "aggregate":  # z = mean + L eps with L L^T the codes' covariance
            mean, cov = gaussian_fit(encode_in_batches(context.generative.encode, context.pool_x).cpu())
            scale = torch.linalg.cholesky(cov + 1e-9 * torch.eye(latent_dim, dtype=torch.float64))

        def candidates(n: int) -> Tensor:
            z = torch.as_tensor(context.rng.standard_normal((n, latent_dim)))
            if self.prior == "aggregate":
                z = mean + z @ scale.T
            return z.to(dtype=torch.float32, device=context.device)

        return self._synthesize(context, k, candidates)

    def select(self, context: SelectionContext, k: int) -> Selection:
        vae, task = context.generative, context.task
        if self.start == "pool" and self.latents is None:  # the first z's: the real initial set's codes
            self.latents = encode_in_batches(vae.encode, context.train_x)

        def candidates(n: int) -> Tensor:
            rows = torch.as_tensor(
                context.rng.choice(len(self.latents), size=n, replace=n > len(self.latents)), device=context.device
            )
            return harder_points(
                context.model, vae.decode, task.loss, self.latents[rows], context.train_y[rows], self.alpha, context.rng
            )

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
                    f"{k} could not be filled; reasons include: {'; '.join(list(reasons)[:3])}"
                )
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
