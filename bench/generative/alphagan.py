"""The alpha-GAN of Rosca et al. (2017), the paper's generative model for CIFAR-10 (Tables S1-S5).

Four parts: an encoder E (image -> latent code), a generator G (code -> image), an image
discriminator D (real images against reconstructions G(E(x)) and prior samples G(z)) and a code
discriminator C (prior draws z ~ N(0, I) against codes E(x)). Residual blocks (Table S1) are
conv3x3-BN-LeakyReLU(0.2) twice, added to their input. Images enter as uint8 or float in [0, 1];
G works in [-1, 1] (tanh) and :meth:`AlphaGAN.decode` returns [0, 1], so the target model takes
stored and generated images alike.

**Reading of the tables.** As printed they cannot build a 32x32 model: the encoder (S2) and the
image discriminator (S4) pool by 2 three times (32 -> 4 pixels, 64 x 4 x 4 = 1,024 features) but
end in a 65,536-wide linear layer (64 x 32 x 32), and the generator (S3) starts from a
65,536-wide layer and then "average pools" three times, which would shrink its output to 4x4.
The default ``layout="pooled"`` keeps every resampling step and fixes the widths: the encoder and
D end in a 1,024-wide linear layer, and G starts from 64 x 4 x 4 and *upsamples* by 2 (nearest)
where the table says pooling, the mirror image of the encoder, to return 32x32 images. This is
the usual DCGAN-style shape and costs about 10x less compute than the alternative.
``layout="unpooled"`` keeps the printed 65,536-wide layers and drops the resampling instead: E
and D run their residual blocks at 32x32 and G never changes resolution.

**Losses** (Rosca et al., Algorithm 1, non-saturating form, discriminators as logits): E and G
minimise ``recon_weight * |x - G(E(x))|_1`` (mean over pixels, in [0, 1] units) plus the
adversarial terms that make C take E(x) for a prior draw and D take G(E(x)) and G(z) for real
images; D learns real against both kinds of generated images, C prior draws against codes. One
Adam step of each per batch. Every epoch's mean of each term is logged and kept.

**Epoch kept**: a seeded ``holdout`` share of the pool is held out from training; after every
epoch the L1 reconstruction of those images (eval mode) is measured, training stops once
``patience`` epochs pass without lowering it, and the weights of the lowest are kept.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.generative.base import BestEpoch, GenerativeSpec, Trained, sample_grid, unit_images

LAYOUTS = ("pooled", "unpooled")
LOSS_NAMES = (
    "reconstruction_l1",
    "encoder_adversarial",
    "generator_adversarial",
    "image_discriminator",
    "code_discriminator",
)
#: The largest weight of the reconstruction term, 100,000 times the paper's 10: there the
#: adversarial terms (each of order 1) are a negligible share of the loss and the model trains as
#: a plain autoencoder, so a larger value is a typo (and 1e300 overflows float32 to inf).
MAX_RECON_WEIGHT = 1e6
HELD_OUT = "held_out_reconstruction_l1"  # the history's held-out term
EVAL_BATCH = 256  # batch of the held-out reconstruction (no gradients)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlphaGANSpec(GenerativeSpec):
    """An alpha-GAN (Rosca et al. 2017; the paper's Tables S1-S5) for 3x32x32 images: encoder,
    generator, image and code discriminators, trained on the unlabeled pool only.

    ``layout`` picks one reading of the tables (see the module doc): ``"pooled"`` (the default)
    keeps every pooling and reads the generator's as 2x upsampling; ``"unpooled"`` keeps the
    65,536-wide fully connected layers and drops the resampling.
    """

    kind = "alphagan"
    label = "alpha-GAN"
    loss = "absolute error per pixel, in [0, 1] (the alpha-GAN's L1 loss)"
    held_out_loss = "L1 reconstruction, absolute error per pixel in [0, 1]"

    latent_dim: int = 3
    channels: int = 64  # width of every convolution and residual block
    epochs: int = 10  # 500k images on the full pool: about 4 min at 2.2k images/s (an H100, batch 64)
    batch_size: int = 64
    lr: float = 2e-4  # Adam, every part
    recon_weight: float = 10.0  # lambda of the L1 reconstruction term (mean over pixels)
    layout: str = "pooled"
    holdout: float = 0.1  # share of the pool held out to choose the epoch kept
    patience: int = 3  # epochs without a lower held-out L1 before stopping

    def check(self) -> None:
        super().check()
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r}: use one of {', '.join(LAYOUTS)}")
        if self.recon_weight > MAX_RECON_WEIGHT:
            raise ValueError(
                f"recon_weight={self.recon_weight!r} is out of range: at most {MAX_RECON_WEIGHT:g} (there the "
                f"adversarial terms are a negligible share of the loss: the model trains as a plain autoencoder); "
                f"give a smaller weight (the paper's is 10)"
            )

    def build(self, input_shape: tuple[int, ...]) -> AlphaGAN:
        return AlphaGAN(self)

    def train(self, pool_x: Tensor, seed: int, progress: bool = True) -> Trained:
        return train_alphagan(pool_x, self, seed, progress)

    def reconstruct(self, model: AlphaGAN, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return model.reconstruct(x)

    def cache_salt(self, pool_x: Tensor) -> str:
        return f"alphagan {pool_x.dtype}"

    def save_extras(self, trained: Trained, pool_x: Tensor, path: Path, seed: int) -> None:
        """The per-epoch losses and the epoch kept (``.json``) and a grid of pool images,
        reconstructions and prior samples (``.png``) beside the weights."""
        log = {"spec": self.settings(), "seed": seed, "losses_per_epoch": trained.history}
        log.update(best_epoch=trained.best_epoch, epochs_run=trained.epochs_run, final_loss=trained.final_loss)
        path.with_suffix(".json").write_text(json.dumps(log, indent=1))
        sample_grid(trained.model, pool_x, path.with_suffix(".png"), seed)


class ResidualBlock(nn.Module):
    """Table S1: x + [conv3x3, BN, LeakyReLU(0.2)] x 2, channels unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def image_to_vector(channels: int, out_features: int, pooled: bool) -> nn.Sequential:
    """Tables S2 and S4: conv5x5 (3 -> channels), [pool], ReLU, then three residual blocks with a
    pool before the second and third ([pool] only when ``pooled``), flattened into a linear layer."""
    pool = (lambda: [nn.AvgPool2d(2)]) if pooled else (lambda: [])
    side = 4 if pooled else 32
    return nn.Sequential(
        nn.Conv2d(3, channels, 5, padding=2),
        *pool(),
        nn.ReLU(),
        ResidualBlock(channels),
        *pool(),
        ResidualBlock(channels),
        *pool(),
        ResidualBlock(channels),
        nn.Flatten(),
        nn.Linear(channels * side * side, out_features),
    )


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x upsampling of [B, C, H, W]. Under CUDA's deterministic algorithms it
    is computed as an expand and reshape (the same values), because upsample_nearest2d's
    backward has no deterministic CUDA kernel; elsewhere it is the plain op (same bits as ever)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cuda and torch.are_deterministic_algorithms_enabled():
            return upsample_by_expand(x)
        return nnf.interpolate(x, scale_factor=2.0, mode="nearest")


def upsample_by_expand(x: Tensor) -> Tensor:
    """Nearest 2x upsampling of [B, C, H, W] as an expand and reshape (channels-last out)."""
    b, c, h, w = x.shape
    up = x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
    return up.contiguous(memory_format=torch.channels_last)


class Generator(nn.Module):
    """Table S3: linear (latent -> channels x side x side), ReLU, four residual blocks with a 2x
    upsampling between them (``pooled``; none when unpooled), conv1x1 (channels -> 3), tanh."""

    def __init__(self, latent_dim: int, channels: int, pooled: bool) -> None:
        super().__init__()
        self.channels, self.side = channels, 4 if pooled else 32
        self.project = nn.Sequential(nn.Linear(latent_dim, channels * self.side**2), nn.ReLU())
        up = (lambda: [Upsample2x()]) if pooled else (lambda: [])
        self.body = nn.Sequential(
            ResidualBlock(channels),
            *up(),
            ResidualBlock(channels),
            *up(),
            ResidualBlock(channels),
            *up(),
            ResidualBlock(channels),
            nn.Conv2d(channels, 3, 1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Images [B, 3, 32, 32] in [-1, 1] of codes [B, latent]."""
        h = self.project(z).view(len(z), self.channels, self.side, self.side)
        return self.body(h.contiguous(memory_format=torch.channels_last))


class AlphaGAN(nn.Module):
    """Encoder, generator, image discriminator and code discriminator (Tables S2-S5)."""

    def __init__(self, spec: AlphaGANSpec) -> None:
        super().__init__()
        if spec.layout not in LAYOUTS:
            raise ValueError(f"unknown alpha-GAN layout {spec.layout!r}; use one of {', '.join(LAYOUTS)}")
        pooled = spec.layout == "pooled"
        self.encoder = image_to_vector(spec.channels, spec.latent_dim, pooled)
        self.generator = Generator(spec.latent_dim, spec.channels, pooled)
        self.image_discriminator = image_to_vector(spec.channels, 1, pooled)
        self.code_discriminator = nn.Sequential(  # Table S5; its sigmoid is inside the loss
            nn.Linear(spec.latent_dim, 700),
            nn.LeakyReLU(0.2),
            nn.Linear(700, 700),
            nn.LeakyReLU(0.2),
            nn.Linear(700, 1),
        )
        self.latent_dim = spec.latent_dim

    @staticmethod
    def to_signed(x: Tensor) -> Tensor:
        """Images (uint8, or float in [0, 1]) -> float in [-1, 1], channels-last."""
        return (unit_images(x) * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)

    def encode(self, x: Tensor) -> Tensor:
        """E: latent codes [B, latent] of images [B, 3, 32, 32] (uint8, or float in [0, 1])."""
        return self.encoder(self.to_signed(x))

    def decode(self, z: Tensor) -> Tensor:
        """G: images [B, 3, 32, 32], float in [0, 1], of latent points [B, latent]."""
        return (self.generator(z) + 1.0) * 0.5

    def reconstruct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample L1 reconstruction error [B] (mean absolute error per pixel, in [0, 1]) and
        the reconstructions G(E(x)) [B, 3, 32, 32] in [0, 1]."""
        output = self.decode(self.encode(x))
        return (output - unit_images(x)).abs().flatten(1).mean(1), output


def _real(logits: Tensor) -> Tensor:
    return nnf.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def _fake(logits: Tensor) -> Tensor:
    return nnf.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def train_alphagan(pool_x: Tensor, spec: AlphaGANSpec, seed: int, progress: bool = True) -> Trained:
    """Train an alpha-GAN on ``pool_x`` [N, 3, 32, 32] (on its device) less its held-out share,
    keeping the epoch of the lowest held-out L1 (see the module doc); returns it in eval mode,
    frozen, with the per-epoch means of each loss term (``LOSS_NAMES``) and, when holding out,
    the held-out L1 (:data:`HELD_OUT`)."""
    torch.manual_seed(seed)
    device = pool_x.device
    model = AlphaGAN(spec).to(device, memory_format=torch.channels_last)
    fused = {"fused": True} if device.type == "cuda" else {}

    def adam(*parts: nn.Module) -> torch.optim.Adam:
        params = [p for part in parts for p in part.parameters()]
        return torch.optim.Adam(params, lr=spec.lr, betas=(0.5, 0.999), **fused)

    opt_eg = adam(model.encoder, model.generator)
    opt_d, opt_c = adam(model.image_discriminator), adam(model.code_discriminator)
    shuffle = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=device).manual_seed(seed)
    train, held = (part.to(device) for part in spec.pool_split(len(pool_x), seed))
    held_x = pool_x[held]
    best = BestEpoch(model, spec.patience)
    history: list[dict[str, float]] = []
    epochs = tqdm(range(spec.epochs), desc="training alpha-GAN", unit="epoch", disable=not progress)
    model.train()
    for epoch in epochs:
        order = train[torch.randperm(len(train), generator=shuffle).to(device)]
        sums = torch.zeros(len(LOSS_NAMES), device=device)  # summed on the device: no sync per step
        batches = 0
        for start in range(0, len(order), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            if len(batch) < 2:  # batch norm cannot train on one image
                continue
            sums += _step(model, AlphaGAN.to_signed(pool_x[batch]), spec, opt_eg, opt_d, opt_c, noise)
            batches += 1
        means = dict(zip(LOSS_NAMES, (sums / max(batches, 1)).tolist()))
        if len(held_x):
            means[HELD_OUT] = held_out_l1(model, held_x)
        history.append(means)
        epochs.set_postfix_str(f"L1 {means['reconstruction_l1']:.3f}, D {means['image_discriminator']:.2f}")
        log.info(
            "alpha-GAN epoch %d/%d: %s", epoch + 1, spec.epochs, ", ".join(f"{k} {v:.4f}" for k, v in means.items())
        )
        if best.stop_after(means.get(HELD_OUT)):
            break
    model = best.restore().eval().requires_grad_(False)
    final = history[best.best_epoch - 1][HELD_OUT if len(held_x) else "reconstruction_l1"] if history else math.nan
    return Trained(model, final, history, best.best_epoch, best.epochs_run)


@torch.no_grad()
def held_out_l1(model: AlphaGAN, x: Tensor) -> float:
    """Mean absolute error per pixel (in [0, 1]) of the reconstructions G(E(x)) of held-out images
    x [M, 3, 32, 32], in eval mode (batch norm uses its running statistics) and batches of
    :data:`EVAL_BATCH`; the model is back in the mode it was in after."""
    training = model.training
    model.eval()
    total = sum(model.reconstruct(batch)[0].sum() for batch in x.split(EVAL_BATCH))
    model.train(training)
    return float(total) / len(x)


def _step(model: AlphaGAN, x: Tensor, spec: AlphaGANSpec, opt_eg, opt_d, opt_c, noise: torch.Generator) -> Tensor:
    """One update of E and G, then of D, then of C, on real images ``x`` in [-1, 1]; returns the
    five loss terms [5] (detached, on the device)."""
    e, g, d, c = model.encoder, model.generator, model.image_discriminator, model.code_discriminator
    z_prior = torch.randn(len(x), model.latent_dim, generator=noise, device=x.device)
    z_hat = e(x)
    x_rec, x_gen = g(z_hat), g(z_prior)
    # the L1 term in [0, 1] units: |x - x_rec| / 2 for images in [-1, 1]
    recon = (x - x_rec).abs().mean() * 0.5
    enc_adv = _real(c(z_hat))
    gen_adv = _real(d(torch.cat([x_rec, x_gen])))
    opt_eg.zero_grad(set_to_none=True)
    (spec.recon_weight * recon + enc_adv + gen_adv).backward()
    opt_eg.step()

    fakes = torch.cat([x_rec, x_gen]).detach()
    d_loss = _real(d(x)) + _fake(d(fakes))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()

    c_loss = _real(c(z_prior)) + _fake(c(z_hat.detach()))
    opt_c.zero_grad(set_to_none=True)
    c_loss.backward()
    opt_c.step()
    return torch.stack([recon, enc_adv, gen_adv, d_loss, c_loss]).detach()
