"""What the latent strategies use of a generative model (:class:`GenerativeModel`), and what a
task declares to get one (:class:`GenerativeSpec`: settings that know how to build, train and
describe their model)."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn


@runtime_checkable
class GenerativeModel(Protocol):
    """E and G, all a latent strategy uses (``SelectionContext.generative``); a plug-in's own
    generative model satisfies it by having these three members."""

    @property
    def latent_dim(self) -> int:
        """Dimension d of the latent space."""
        ...

    def encode(self, x: Tensor) -> Tensor:
        """E: latent codes [B, d] of inputs [B, ...]."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """G: inputs [B, ...] (values in [0, 1]) generated from latent points [B, d]."""
        ...


#: Mixed with the seed to seed :func:`holdout_split`'s own stream ("held" in ASCII), so the split
#: shares no stream with training's shuffle or noise.
HOLDOUT_STREAM = 0x68656C64


@dataclass
class Trained:
    """A freshly trained generative model (eval mode, frozen) and how it was chosen.

    ``final_loss`` is the held-out loss of the epoch kept (the spec's :attr:`GenerativeSpec.held_out_loss`)
    when part of the pool was held out, else the last epoch's training reconstruction loss.
    ``best_epoch`` is that epoch, 1-based; ``epochs_run`` the epochs trained before stopping;
    ``history`` the per-epoch loss terms, where training keeps them."""

    model: nn.Module
    final_loss: float
    history: list[dict[str, float]] | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None

    def record(self) -> dict[str, Any]:
        """What the cache keeps beside the weights: plain floats, ints and lists (``weights_only``)."""
        record = {"final_loss": self.final_loss, "best_epoch": self.best_epoch, "epochs_run": self.epochs_run}
        return record if self.history is None else {**record, "history": self.history}


@dataclass
class BestEpoch:
    """Early stopping on a held-out loss: keeps a copy of ``model``'s weights whenever an epoch's
    held-out loss is the lowest so far, and says when ``patience`` epochs have passed without
    improving it. Without a held-out loss (nothing held out) every epoch counts as the best and
    nothing is copied: training runs all its epochs and keeps the last."""

    model: nn.Module
    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0  # 1-based; 0 until an epoch improves
    epochs_run: int = 0
    best_state: dict[str, Tensor] | None = None

    def stop_after(self, held_out_loss: float | None) -> bool:
        """Record the epoch just trained (its held-out loss, or None); True when training should stop."""
        self.epochs_run += 1
        if held_out_loss is None:
            self.best_epoch = self.epochs_run
            return False
        if held_out_loss < self.best_loss:  # a NaN loss never improves
            self.best_loss, self.best_epoch = held_out_loss, self.epochs_run
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return self.epochs_run - self.best_epoch >= self.patience

    def restore(self) -> nn.Module:
        """The model with the best epoch's weights loaded (the last epoch's when none improved,
        and then ``best_epoch`` becomes the last)."""
        if self.best_state is None:
            self.best_epoch = self.epochs_run
        else:
            self.model.load_state_dict(self.best_state)
        return self.model


@dataclass(frozen=True)
class GenerativeSpec(ABC):
    """The settings of a task's generative model (``Task.generative``), trained on the unlabeled
    pool only. A subclass is a frozen dataclass of its settings (one of them ``latent_dim``) and
    says how to build, train and describe its model; the harness caches what it trains."""

    kind: ClassVar[str]  # names its cached weights: <kind>-<task>-<key>.pt
    label: ClassVar[str]  # how reports name the model, e.g. "VAE"
    loss: ClassVar[str] = "squared error per value, in [0, 1] units"  # what :meth:`reconstruct`'s loss is
    held_out_loss: ClassVar[str] = ""  # what training minimises on the held-out pool samples, with units
    #: Numeric settings that may be 0 (others must be positive).
    zero_allowed: ClassVar[frozenset[str]] = frozenset({"holdout"})

    @abstractmethod
    def build(self, input_shape: tuple[int, ...]) -> nn.Module:
        """An untrained model for inputs of shape ``input_shape`` (one sample's)."""

    @abstractmethod
    def train(self, pool_x: Tensor, seed: int, progress: bool = True) -> Trained:
        """Train a model on ``pool_x`` [N, ...] (on its device), seeded by ``seed``."""

    def reconstruct(self, model: GenerativeModel, x: Tensor) -> tuple[Tensor, Tensor]:
        """The model's reconstruction loss of each input (see :attr:`loss`) [B] and its
        reconstructions G(E(x)) [B, ...] in [0, 1]; by default the squared error per value."""
        output = model.decode(model.encode(x))
        return (output - unit_images(x)).square().flatten(1).mean(1), output

    def check(self) -> None:
        """Raise ValueError naming a setting that cannot build a model (checked before any work);
        a subclass that checks more calls this too."""
        check_holdout(self.holdout_fraction())

    def holdout_fraction(self) -> float:
        """The fraction of the pool held out from training to choose the epoch kept: the
        ``holdout`` setting, 0 for a spec without one (it trains on the whole pool)."""
        return float(getattr(self, "holdout", 0.0))

    def pool_split(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """The indices of a pool of ``n`` samples the model trains on and holds out (:func:`holdout_split`)."""
        return holdout_split(n, self.holdout_fraction(), seed)

    def check_pool(self, n: int) -> None:
        """Raise ValueError naming ``holdout`` when a pool of ``n`` samples cannot be split by it."""
        holdout_size(n, self.holdout_fraction())

    def footprint(self, input_shape: tuple[int, ...]) -> tuple[int, int]:
        """The parameter count and the bytes of parameters and buffers of the model :meth:`build`
        makes for inputs of ``input_shape``, built on torch's meta device: no memory is allocated,
        so settings too large for the machine can be measured and refused before any work."""
        with torch.device("meta"):
            model = self.build(input_shape)
        parameters = list(model.parameters())
        tensors = [*parameters, *model.buffers()]
        return sum(p.numel() for p in parameters), sum(t.numel() * t.element_size() for t in tensors)

    def cache_salt(self, pool_x: Tensor) -> str:
        """Extra text in the cache key of a model trained on ``pool_x`` (beyond task, pool, seed
        and settings), e.g. the pool's dtype."""
        return ""

    def save_extras(self, trained: Trained, pool_x: Tensor, path: Path, seed: int) -> None:
        """Keep what helps judge the trained model beside its cached weights at ``path``."""

    def settings(self) -> dict[str, Any]:
        """Every setting by name, in declaration order."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line: the model and its settings, e.g. ``VAE (hidden=400, latent_dim=3, ...)``."""
        return f"{self.label} ({', '.join(f'{k}={v}' for k, v in self.settings().items())})"

    def replace(self, **overrides: Any) -> GenerativeSpec:
        """A copy with the non-None ``overrides`` applied."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def check_holdout(fraction: float) -> None:
    """Raise ValueError naming ``holdout`` unless 0 <= fraction < 1."""
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout={fraction!r}: must be at least 0 and below 1 (the share of the pool held out)")


def holdout_size(n: int, fraction: float) -> int:
    """How many of ``n`` pool samples a ``fraction`` holds out: round(fraction * n), at least 1
    when fraction > 0. ValueError naming ``holdout`` when fewer than 2 samples would remain to
    train on (or the fraction is outside [0, 1))."""
    check_holdout(fraction)
    held = max(round(fraction * n), 1) if fraction > 0 else 0
    if n - held < 2:
        raise ValueError(
            f"holdout={fraction!r} holds out {held} of {n} pool samples and leaves {n - held} to train on; "
            f"at least 2 must remain: lower holdout (0 trains on the whole pool)"
        )
    return held


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """The indices (int64, CPU) of a pool of ``n`` samples a generative model trains on [n - h],
    in increasing order, and holds out [h], h = :func:`holdout_size`: disjoint, together the
    whole pool, drawn from ``seed`` on a stream of their own (no labels involved). With
    ``fraction`` 0 it trains on all, ``arange(n)``, and holds out none."""
    held = holdout_size(n, fraction)
    state = np.random.SeedSequence([seed, HOLDOUT_STREAM]).generate_state(1, dtype=np.uint64)[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))
    return order[held:].sort().values, order[:held]


def unit_images(x: Tensor) -> Tensor:
    """Images as float in [0, 1]: uint8 [B, C, H, W] is divided by 255, float passes through.
    Image tasks keep their data as uint8 and models convert on the fly, so a model accepts both
    stored images and generated ones."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


@torch.no_grad()
def sample_grid(model: GenerativeModel, pool_x: Tensor, path: Path, seed: int, n: int = 10) -> Path:
    """Save a PNG of ``n`` pool images (row 1), their reconstructions G(E(x)) (row 2) and 2n
    prior samples G(z), z ~ N(0, I) (rows 3-4), enlarged 3x: what the latent strategies walk
    through. Image inputs only ([B, C, H, W])."""
    import torch.nn.functional as nnf
    from torchvision.utils import save_image

    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(pool_x), generator=generator)[:n].to(pool_x.device)
    real = unit_images(pool_x[rows])
    z = torch.randn(2 * n, model.latent_dim, generator=generator).to(pool_x.device)
    grid = torch.cat([real, unit_images(model.decode(model.encode(pool_x[rows]))), unit_images(model.decode(z))])
    grid = nnf.interpolate(grid.float().cpu(), scale_factor=3, mode="nearest")
    save_image(grid, str(path), nrow=n, padding=2, pad_value=1.0)
    return Path(path)
