"""The step both latent strategies share (paper Sec. 3.3): move latent points towards harder samples.

For latent points p with targets y, the loss L(F(G(p)), y) is back-propagated to p; each point
then steps ``alpha`` along its normalised gradient d: p' = p + alpha * d. F and G are used in
eval mode and none of their parameters change.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn


@torch.no_grad()
def encode_in_batches(encode: Callable[[Tensor], Tensor], x: Tensor, batch: int = 4096) -> Tensor:
    """Latent codes [N, latent] of a whole set ``x`` [N, ...] under ``encode``, ``batch`` rows at a time."""
    return torch.cat([encode(x[i : i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def gaussian_fit(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Mean [latent] and covariance [latent, latent] (float64, maximum likelihood) of latent codes
    [N, latent]: the Gaussian fit of an aggregate posterior, e.g. the pool's codes under E."""
    codes = codes.double()
    mean = codes.mean(0)
    centred = codes - mean
    return mean, centred.T @ centred / len(codes)


def loss_gradients(
    model: nn.Module,
    generate: Callable[[Tensor], Tensor],
    loss: Callable[[Tensor, Tensor], Tensor],
    p: Tensor,
    y: Tensor,
) -> Tensor:
    """dL/dp [J, latent] of the per-point losses L(F(G(p_j)), y_j) (each point gets the gradient
    of its own loss: F runs in eval mode, so samples do not interact)."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            p = p.detach().clone().requires_grad_(True)
            total = loss(model(generate(p)), y) * len(p)  # the task loss is a batch mean
            (grad,) = torch.autograd.grad(total, p)
    finally:
        model.train(was_training)
    return grad


def unit_directions(grad: Tensor, rng: np.random.Generator) -> Tensor:
    """Normalised gradients [J, latent]; a zero gradient (a saturated model) gets a random unit
    direction drawn from ``rng`` instead, so every point still moves."""
    norms = grad.norm(dim=1, keepdim=True)
    flat = norms.squeeze(1) <= 1e-12
    if flat.any():
        random = torch.as_tensor(
            rng.standard_normal((int(flat.sum()), grad.shape[1])), dtype=grad.dtype, device=grad.device
        )
        grad = grad.clone()
        grad[flat] = random
        norms = grad.norm(dim=1, keepdim=True)
    return grad / norms


def harder_points(
    model: nn.Module,
    generate: Callable[[Tensor], Tensor],
    loss: Callable[[Tensor, Tensor], Tensor],
    p: Tensor,
    y: Tensor,
    alpha: float,
    rng: np.random.Generator,
) -> Tensor:
    """p' = p + alpha * d [J, latent]: each latent point moved ``alpha`` towards a higher loss."""
    return p.detach() + alpha * unit_directions(loss_gradients(model, generate, loss, p, y), rng)
