"""What the latent strategies use of a generative model (:class:`GenerativeModel`), and what a
task declares to get one (:class:`GenerativeSpec`: settings that know how to build, train and
describe their model)."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

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


@dataclass
class Trained:
    """A freshly trained generative model (eval mode, frozen), its final reconstruction loss and,
    where training keeps them, its per-epoch loss terms."""

    model: nn.Module
    final_loss: float
    history: list[dict[str, float]] | None = None


@dataclass(frozen=True)
class GenerativeSpec(ABC):
    """The settings of a task's generative model (``Task.generative``), trained on the unlabeled
    pool only. A subclass is a frozen dataclass of its settings (one of them ``latent_dim``) and
    says how to build, train and describe its model; the harness caches what it trains."""

    kind: ClassVar[str]  # names its cached weights: <kind>-<task>-<key>.pt
    label: ClassVar[str]  # how reports name the model, e.g. "VAE"
    loss: ClassVar[str] = "squared error per value, in [0, 1] units"  # what :meth:`reconstruct`'s loss is

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
        """Raise ValueError naming a setting that cannot build a model (checked before any work)."""

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


def unit_images(x: Tensor) -> Tensor:
    """Images as float in [0, 1]: uint8 [B, C, H, W] is divided by 255, float passes through.
    Image tasks keep their data as uint8 and models convert on the fly, so a model accepts both
    stored images and generated ones."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x
