"""The generative model of the latent strategies, trained on the unlabeled pool and cached.

A task declares which one it uses: a :class:`GenerativeSpec` asks for the paper's VAE (Tables
S9-S12: encoder fc D->400->400 -> (mean, log-variance) of the latent dimension, decoder fc
latent->400->400->D with a sigmoid; inputs in [0, 1], Bernoulli likelihood), an
:class:`AlphaGANSpec` for the alpha-GAN of :mod:`bench.generative.alphagan`. Either is trained once per
(task, pool, seed, architecture, training settings) and kept on disk as a state dict (loaded with
``weights_only``); later runs, repeats and strategies load it. Both expose ``encode`` (E) and
``decode`` (G), which is all the strategies use. An alpha-GAN also leaves its per-epoch losses
(``.json``) and a sample grid (``.png``) beside its weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.run import checkpoint
from bench.generative.alphagan import AlphaGAN, sample_grid, train_alphagan
from tasks.base import AlphaGANSpec, GenerativeSpec

VERSION = "1"  # bump when training changes results; part of the cache key
log = logging.getLogger(__name__)


class VAE(nn.Module):
    """A fully connected VAE over inputs of shape ``input_shape`` (values in [0, 1])."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int = 400, latent_dim: int = 3) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        features = math.prod(self.input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, features))

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

    def losses(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction (Bernoulli cross-entropy) and KL terms of the negative ELBO, in nats
        per sample averaged over the batch."""
        mean, log_var = self.posterior(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        recon = nnf.binary_cross_entropy_with_logits(self.decode_logits(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
        return recon / len(x), kl / len(x)


def train_vae(pool_x: Tensor, spec: GenerativeSpec, seed: int, progress: bool = True) -> tuple[VAE, float]:
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


def cache_key(task: str, pool_x: Tensor, spec: GenerativeSpec | AlphaGANSpec, seed: int) -> str:
    """A digest of everything the trained model depends on: task, pool contents, seed, settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"task": task, "seed": seed, "spec": dataclasses.asdict(spec), "version": VERSION,
                              "shape": list(pool_x.shape)}, sort_keys=True).encode())
    if isinstance(spec, AlphaGANSpec):  # a VAE's key stays what it was before alpha-GANs existed
        digest.update(f"alphagan {pool_x.dtype}".encode())
    digest.update(pool_x.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def cache_path(task: str, pool_x: Tensor, spec: GenerativeSpec | AlphaGANSpec, seed: int, cache_dir: Path) -> Path:
    """Where the model for (task, pool, seed, spec) is kept: ``<cache_dir>/<kind>-<task>-<key>.pt``."""
    kind = "alphagan" if isinstance(spec, AlphaGANSpec) else "vae"
    return Path(cache_dir) / f"{kind}-{task}-{cache_key(task, pool_x, spec, seed)}.pt"


def build(pool_x: Tensor, spec: GenerativeSpec | AlphaGANSpec) -> nn.Module:
    """An untrained model of ``spec`` for inputs shaped like ``pool_x``'s rows."""
    if isinstance(spec, AlphaGANSpec):
        return AlphaGAN(spec)
    return VAE(tuple(pool_x.shape[1:]), spec.hidden, spec.latent_dim)


def load_or_train(
    task: str, pool_x: Tensor, spec: GenerativeSpec | AlphaGANSpec, seed: int, cache_dir: Path,
    progress: bool = True,
) -> nn.Module:
    """The generative model for (task, pool, seed, spec), in eval mode and frozen, on the pool's
    device: loaded from ``cache_dir`` when trained before, else trained now and saved there."""
    return load_or_train_at(cache_path(task, pool_x, spec, seed, cache_dir), pool_x, spec, seed, progress)


def load_or_train_at(
    path: Path, pool_x: Tensor, spec: GenerativeSpec | AlphaGANSpec, seed: int, progress: bool = True,
) -> nn.Module:
    """:func:`load_or_train` with the cache file ``path`` (from :func:`cache_path`) given."""
    model = build(pool_x, spec)
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            problem = integrity_problem(saved)
            if problem is None:
                model.load_state_dict(saved["state_dict"])
                log.info("loaded the cached generative model %s (final reconstruction loss %.4g)", path,
                         saved["final_loss"])
                return model.to(pool_x.device).eval().requires_grad_(False)
            log.warning("cached generative model %s fails its integrity check (%s); retraining and replacing it",
                        path, problem)
        except Exception as err:  # corrupt or stale file: retrain and replace it
            log.warning("cached generative model %s is unreadable (%s); retraining", path, err)
    start = time.perf_counter()
    extra = {}
    if isinstance(spec, AlphaGANSpec):
        model, history = train_alphagan(pool_x, spec, seed, progress)
        final = history[-1]["reconstruction_l1"] if history else float("nan")
        extra["history"] = history
    else:
        model, final = train_vae(pool_x, spec, seed, progress)
    log.info("trained %s in %.0f s: final reconstruction loss %.4g", path.name, time.perf_counter() - start, final)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": state, "checksum": weights_digest(state), "final_loss": final,
                    "spec": dataclasses.asdict(spec), "seed": seed, **extra}, tmp)
        tmp.replace(path)
        if isinstance(spec, AlphaGANSpec):
            path.with_suffix(".json").write_text(json.dumps({"spec": dataclasses.asdict(spec), "seed": seed,
                                                             "losses_per_epoch": extra["history"]}, indent=1))
            sample_grid(model, pool_x, path.with_suffix(".png"), seed)
    except OSError as err:  # a read-only or full cache: the run goes on with the model in memory
        log.warning("could not cache the trained generative model in %s (%s); going on without caching it",
                    path.parent, err.strerror or err)
    return model


def weights_digest(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes (the cache's integrity check)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name} {value.dtype} {tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def integrity_problem(saved: dict) -> str | None:
    """Why a cached model must not be used (a checksum that does not match its weights, or
    weights that are not finite), or None. Files from before checksums are checked for finiteness."""
    state = saved["state_dict"]
    if "checksum" in saved and saved["checksum"] != weights_digest(state):
        return "its weights do not match their checksum"
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        return f"non-finite weights in {', '.join(bad[:3])}"
    return None


def to_bytes(model: nn.Module) -> bytes:
    """A trained generative model's weights as bytes, to send to workers that lack the cache."""
    return checkpoint.to_bytes(model.state_dict())


def from_bytes(payload: bytes, pool_x: Tensor, spec: GenerativeSpec | AlphaGANSpec) -> nn.Module:
    """The model :func:`to_bytes` serialised, in eval mode and frozen, on the pool's device."""
    model = build(pool_x, spec)
    model.load_state_dict(checkpoint.from_bytes(payload))
    return model.to(pool_x.device).eval().requires_grad_(False)
