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

from bench.generative.base import BestEpoch, GenerativeSpec, Trained, unit_images

EVAL_BATCH = 1024  # batch of the held-out loss (no gradients)


@dataclass(frozen=True)
class VAESpec(GenerativeSpec):
    """A VAE with fully connected encoder and decoder (input -> hidden -> hidden -> latent, and
    back; the paper's Tables S9-S12), trained on the unlabeled pool only, with these settings.

    A seeded ``holdout`` share of the pool is held out (no labels involved); training runs at most
    ``epochs`` epochs on the rest, stops once ``patience`` epochs pass without lowering the
    held-out negative ELBO, and keeps the weights of the epoch with the lowest (holdout 0: trains
    on all and keeps the last epoch). ``beta`` weighs the KL term of the training loss (1: the
    paper's ELBO); the held-out loss always weighs it 1, so models of any beta compare on it."""

    kind = "vae"
    label = "VAE"
    loss = "Bernoulli cross-entropy, nats per sample (the VAE's loss)"
    held_out_loss = "negative ELBO (KL weight 1), nats per sample"

    hidden: int = 400
    latent_dim: int = 3
    epochs: int = 30  # the most epochs trained
    batch_size: int = 128
    lr: float = 1e-3
    holdout: float = 0.1  # share of the pool held out to choose the epoch kept
    patience: int = 20  # epochs without a lower held-out loss before stopping
    beta: float = 1.0  # weight of the KL term in training

    def build(self, input_shape: tuple[int, ...]) -> VAE:
        return VAE(input_shape, self.hidden, self.latent_dim)

    def train(self, pool_x: Tensor, seed: int, progress: bool = True) -> Trained:
        return train_vae(pool_x, self, seed, progress)

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

    def losses(self, x: Tensor, noise: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Reconstruction (Bernoulli cross-entropy, of one z drawn from q(z | x) with ``noise``,
        torch's global RNG when None) and KL terms of the negative ELBO, in nats per sample
        averaged over the batch."""
        mean, log_var = self.posterior(x)
        eps = torch.randn(mean.shape, generator=noise, device=mean.device, dtype=mean.dtype)
        z = mean + eps * torch.exp(0.5 * log_var)
        recon = nnf.binary_cross_entropy_with_logits(self.decode_logits(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
        return recon / len(x), kl / len(x)


def train_vae(pool_x: Tensor, spec: VAESpec, seed: int, progress: bool = True) -> Trained:
    """Train a VAE on ``pool_x`` [N, ...] (on its device) less its held-out share, choosing the
    epoch kept on the held-out samples (see :class:`VAESpec`); returns it in eval mode, frozen,
    with the per-epoch history: training ``reconstruction`` and ``kl`` (nats per sample), and,
    when holding out, ``held_out_loss`` (negative ELBO, KL weight 1) and ``held_out_reconstruction``."""
    torch.manual_seed(seed)
    vae = VAE(tuple(pool_x.shape[1:]), spec.hidden, spec.latent_dim).to(pool_x.device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=spec.lr)
    shuffle = torch.Generator().manual_seed(seed)
    train, held = (part.to(pool_x.device) for part in spec.pool_split(len(pool_x), seed))
    held_x = pool_x[held]
    best = BestEpoch(vae, spec.patience)
    history: list[dict[str, float]] = []
    epochs = tqdm(range(spec.epochs), desc="training VAE", unit="epoch", disable=not progress)
    for _ in epochs:
        order = train[torch.randperm(len(train), generator=shuffle).to(pool_x.device)]
        recon_sum = kl_sum = 0.0
        for start in range(0, len(order), spec.batch_size):
            batch = pool_x[order[start : start + spec.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            recon, kl = vae.losses(batch)
            (recon + spec.beta * kl).backward()
            optimizer.step()
            recon_sum += recon.item() * len(batch)
            kl_sum += kl.item() * len(batch)
        row = {"reconstruction": recon_sum / len(order), "kl": kl_sum / len(order)}
        if len(held_x):
            row.update(held_out_terms(vae, held_x, seed))
        history.append(row)
        epochs.set_postfix_str(", ".join(f"{k} {v:.2f}" for k, v in row.items()))
        if best.stop_after(row.get("held_out_loss")):
            break
    vae = best.restore().eval().requires_grad_(False)
    final = history[best.best_epoch - 1]["held_out_loss" if len(held_x) else "reconstruction"]
    return Trained(vae, final, history, best.best_epoch, best.epochs_run)


@torch.no_grad()
def held_out_terms(vae: VAE, x: Tensor, seed: int) -> dict[str, float]:
    """The negative ELBO with KL weight 1 (``held_out_loss``, an upper bound on -log p(x)) and its
    reconstruction term (``held_out_reconstruction``) of held-out inputs x [M, ...], nats per
    sample; one z per input, drawn from a generator seeded by ``seed`` (the same draws every
    epoch, so epochs compare on equal terms), in eval mode (restored after) and batches of :data:`EVAL_BATCH`."""
    training = vae.training
    vae.eval()
    noise = torch.Generator(device=x.device).manual_seed(seed)
    recon_sum = kl_sum = torch.zeros((), device=x.device)
    for batch in x.split(EVAL_BATCH):
        recon, kl = vae.losses(batch, noise)
        recon_sum, kl_sum = recon_sum + recon * len(batch), kl_sum + kl * len(batch)
    vae.train(training)
    return {"held_out_loss": float(recon_sum + kl_sum) / len(x), "held_out_reconstruction": float(recon_sum) / len(x)}
