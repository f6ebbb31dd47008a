"""The paper's VAE (Tables S9-S12): encoder fc D->400->400 -> (mean, log-variance) of the latent
dimension, decoder fc latent->400->400->D with a sigmoid; inputs in [0, 1], Bernoulli likelihood.
A task asks for it with a :class:`VAESpec`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.generative.base import GenerativeSpec, Trained, unit_images


@dataclass(frozen=True)
class VAESpec(GenerativeSpec):
    """A VAE with fully connected encoder and decoder (input -> hidden -> hidden -> latent, and
    back; the paper's Tables S9-S12), trained on the unlabeled pool only, with these settings."""

    kind = "vae"
    label = "VAE"
    loss = "Bernoulli cross-entropy, nats per sample (the VAE's loss)"

    hidden: int = 400
    latent_dim: int = 3
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3

    def build(self, input_shape: tuple[int, ...]) -> VAE:
        return VAE(input_shape, self.hidden, self.latent_dim)

    def train(self, pool_x: Tensor, seed: int, progress: bool = True) -> Trained:
        vae, final = train_vae(pool_x, self, seed, progress)
        return Trained(vae, final)

    def reconstruct(self, model: VAE, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return model.reconstruct(x)


class VAE(nn.Module):
    """A fully connected VAE over inputs of shape ``input_shape`` (values in [0, 1])."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int = 400, latent_dim: int = 3) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        features = math.prod(self.input_shape)
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, features)
        )

    @property
    def latent_dim(self) -> int:
        return self.mean.out_features

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance [B, latent] of q(z | x)."""
        h = self.encoder(x)
        return self.mean(h), self.log_var(h)

    def encode(self, x: Tensor) -> Tensor:
        """E: the posterior mean [B, latent] of inputs [B, *input_shape]."""
        return self.posterior(x)[0]

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z).view(len(z), *self.input_shape)

    def decode(self, z: Tensor) -> Tensor:
        """G: inputs [B, *input_shape] in [0, 1] generated from latent points [B, latent]."""
        return torch.sigmoid(self.decode_logits(z))

    def reconstruct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample reconstruction loss [B] through the posterior mean (Bernoulli cross-entropy,
        nats) and the reconstructions G(E(x)) [B, *input_shape] in [0, 1]."""
        logits = self.decode_logits(self.encode(x))
        loss = nnf.binary_cross_entropy_with_logits(logits, unit_images(x), reduction="none").flatten(1).sum(1)
        return loss, torch.sigmoid(logits)

    def losses(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction (Bernoulli cross-entropy) and KL terms of the negative ELBO, in nats
        per sample averaged over the batch."""
        mean, log_var = self.posterior(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        recon = nnf.binary_cross_entropy_with_logits(self.decode_logits(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
        return recon / len(x), kl / len(x)


def train_vae(pool_x: Tensor, spec: VAESpec, seed: int, progress: bool = True) -> tuple[VAE, float]:
    """Train a VAE on ``pool_x`` [N, ...] (on its device); returns it in eval mode, frozen, and the
    final epoch's mean reconstruction loss (nats per sample)."""
    torch.manual_seed(seed)
    vae = VAE(tuple(pool_x.shape[1:]), spec.hidden, spec.latent_dim).to(pool_x.device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=spec.lr)
    shuffle = torch.Generator().manual_seed(seed)
    epochs = tqdm(range(spec.epochs), desc="training VAE", unit="epoch", disable=not progress)
    for _ in epochs:
        order = torch.randperm(len(pool_x), generator=shuffle).to(pool_x.device)
        recon_sum = kl_sum = 0.0
        for start in range(0, len(pool_x), spec.batch_size):
            batch = pool_x[order[start : start + spec.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            recon, kl = vae.losses(batch)
            (recon + kl).backward()
            optimizer.step()
            recon_sum += recon.item() * len(batch)
            kl_sum += kl.item() * len(batch)
        final = recon_sum / len(pool_x)
        epochs.set_postfix_str(f"reconstruction {final:.2f}, KL {kl_sum / len(pool_x):.2f}")
    return vae.eval().requires_grad_(False), final
