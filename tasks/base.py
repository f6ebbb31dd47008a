"""The interface between the harness and a task: data, target model F, loss, metric, defaults.

A task never knows a strategy; it declares the capabilities it provides (plain strings: the
built-in ones are constants of :class:`Capability`, a plug-in may add its own), and each strategy
declares the capabilities it requires, so the harness can refuse a pair before any work.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from bench.generative import AlphaGANSpec, GenerativeSpec, VAESpec, unit_images  # noqa: F401  (what a task declares)


class Capability:
    """The built-in capabilities: something a strategy may need and a task may provide. A
    capability is a plain string, so a plug-in may declare its own (and describe it with
    :func:`describe_capability` for error messages)."""

    PROBABILITIES = "probabilities"
    EMBEDDINGS = "embeddings"
    GENERATIVE = "generative"
    SYNTHETIC_LABELS = "synthetic-labels"
    DROPOUT = "dropout"


_DESCRIPTIONS = {
    Capability.PROBABILITIES: "class probabilities from the target model",
    Capability.EMBEDDINGS: "embeddings from the target model (F.embed)",
    Capability.GENERATIVE: "a generative model (encoder E and generator G)",
    Capability.SYNTHETIC_LABELS: "a labeler for synthetic inputs",
    Capability.DROPOUT: "dropout layers in the target model (for Monte Carlo dropout passes)",
}


def describe_capability(name: str, description: str | None = None) -> str:
    """What capability ``name`` means, as error messages say it; with ``description``, set it
    first (a plug-in describing its own capability). An undescribed capability reads as its name."""
    if description is not None:
        _DESCRIPTIONS[name] = description
    return _DESCRIPTIONS.get(name, f"the capability {name!r}")


class DataError(ValueError):
    """A task's data cannot be used as they are (e.g. a label out of range); the message names
    the file and the fix."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A task's data is missing; the message says where the task looked and how to provide it."""


@dataclass(frozen=True)
class Metric:
    """The task's headline metric: its name (a ``rounds.csv`` value), direction and display.

    ``bounds`` is the range a value can take, in the units :meth:`Task.scores` returns (before
    ``display_scale``): ``(low, high)``, ``None`` for no bound, e.g. ``(0.0, 100.0)`` for an
    accuracy in %, ``(0.0, None)`` for a squared error. Report figures clip their ±1 std bands to
    it, so a band never claims an accuracy above 100% or a negative error; unbounded by default.
    """

    name: str
    higher_is_better: bool
    label: str  # axis label, e.g. "accuracy (%)"; mentions display_scale when it is not 1
    decimals: int = 1  # digits shown in table.md
    display_scale: float = 1.0  # tables and figures show value * display_scale
    bounds: tuple[float | None, float | None] = (None, None)  # (low, high) in the units of scores


#: How F starts each round after the first: keep training it (the paper), reload the repeat's
#: initial weights, or build a new net from a seed of its own (the same for every strategy).
START_MODES = ("warm", "reset", "fresh")

#: An optimizer: the name of a ``torch.optim`` class (any case, e.g. ``"sgd"``) or a factory
#: ``(parameters, lr, **options) -> Optimizer``.
OptimizerSpec = str | Callable[..., Any]


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` class called ``name`` in any case (``"sgd"`` -> ``torch.optim.SGD``);
    an unknown name raises ValueError listing the known ones."""
    known = {
        k.lower(): v
        for k, v in vars(torch.optim).items()
        if isinstance(v, type) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer
    }
    try:
        return known[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; torch.optim has {', '.join(sorted(known))}") from None


def make_optimizer(spec: OptimizerSpec, parameters, lr: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    """An optimizer over ``parameters``: ``spec`` is a ``torch.optim`` name or a factory
    ``(parameters, lr=..., **options)``, as a task's protocol declares it."""
    factory: Callable[..., torch.optim.Optimizer] = optimizer_class(spec) if isinstance(spec, str) else spec
    return factory(parameters, lr=lr, **options)


def optimizer_name(spec: OptimizerSpec) -> str:
    """How the manifest records an optimizer: its torch.optim name, or a factory's import path."""
    return spec if isinstance(spec, str) else f"{spec.__module__}:{spec.__qualname__}"


@dataclass(frozen=True)
class Protocol:
    """A task's progressive protocol and training recipe; every CLI flag can override them.

    The recipe is the optimizer (``torch.optim`` name or factory, its learning rate ``lr`` and
    other keyword arguments ``optimizer_options``), ``batch_size``, ``epochs`` per round and the
    ``start`` mode (:data:`START_MODES`). A new optimizer is built whenever F is (re)initialised.
    """

    initial: int  # labeled samples at round 1
    increment: int  # samples added after each round
    rounds: int  # T
    epochs: int  # training epochs per round
    batch_size: int
    lr: float  # the optimizer's learning rate
    augment: bool = False  # train on randomly augmented batches (tasks with ``augmentation`` only)
    optimizer: OptimizerSpec = "adam"
    optimizer_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"momentum": 0.5}
    start: str = "warm"  # one of START_MODES

    def replace(self, **overrides) -> Protocol:
        """A copy with the non-None ``overrides`` applied."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Labels:
    """Targets for synthesized inputs from a task's labeler, with the inputs as labeled (e.g. a
    generated image thresholded and cleaned into a valid mask). Rows with ``ok`` False could not
    be labeled; ``errors`` says why."""

    inputs: Tensor  # [B, ...]
    targets: Tensor  # [B, ...]
    ok: np.ndarray  # bool [B]
    errors: dict[int, str]


@dataclass
class RealismSets:
    """The inputs a task's realism measures look at, each [n, ...] on the data's device: real pool
    samples, real held-out test samples (how far real data of the same source lie: the floor),
    the generative model's reconstructions G(E(x)) of those pool samples, and its prior samples
    G(z), z ~ N(0, I) (what the latent strategies start from)."""

    pool: Tensor
    test: Tensor
    reconstructions: Tensor
    prior: Tensor

    def named(self) -> dict[str, Tensor]:
        """The sets by field name (the set keys of :attr:`Realism.values`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class Realism:
    """A task's measures of how real inputs look: ``values[measure][set]`` for the sets of
    :class:`RealismSets` (a measure may leave a set out), ``about[measure]`` what a measure is
    (units, how it is taken), and ``notes`` on how they were made (e.g. the reference model)."""

    values: dict[str, dict[str, float]] = field(default_factory=dict)
    about: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class TaskData:
    """The pool (labels hidden from strategies) and the held-out test set, as tensors.

    ``pool_x``/``test_x`` are float tensors [N, ...] (or uint8 images [N, C, H, W], which the
    task's models convert with :func:`unit_images`); ``pool_y``/``test_y`` are the targets
    (class indices [N] int64, or maps [N, ...] float32).
    """

    pool_x: Tensor
    pool_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str = ""  # where the data came from, when a task reads one of several copies (manifest)

    def __post_init__(self) -> None:
        for part in ("pool", "test"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            if len(x) != len(y):
                raise ValueError(f"{part}_x has {len(x)} samples but {part}_y has {len(y)}")

    def subset(self, n: int, generator: torch.Generator) -> TaskData:
        """``n`` random pool samples and at most ``n`` random test samples (for quick runs)."""
        pool = torch.randperm(len(self.pool_x), generator=generator)[:n].sort().values
        test = torch.randperm(len(self.test_x), generator=generator)[: min(n, len(self.test_x))]
        test = test.sort().values
        return TaskData(self.pool_x[pool], self.pool_y[pool], self.test_x[test], self.test_y[test], self.source)

    def check_finite(self, task: str) -> None:
        """Refuse NaN and infinite values before any work: a NaN test input would otherwise be
        scored as a (wrong) prediction, and a NaN pool would fail every unit as diverged training.

        Raises DataError naming ``task``, the split (pool or test, inputs or targets), how many
        values are not finite, in how many samples, and the first such sample. Only floating-point
        tensors are checked (uint8 images and int64 class indices cannot hold NaN), on their own
        device, with one min-max pass each (NaN propagates to both ends); the values are counted
        only when that pass fails. About 10 ms for MNIST's 60k pool on one CPU thread.
        """
        where = f" ({self.source})" if self.source else ""
        splits = {"pool inputs": self.pool_x, "pool targets": self.pool_y}
        splits |= {"test inputs": self.test_x, "test targets": self.test_y}
        for split, values in splits.items():
            if not values.is_floating_point() or values.numel() == 0:
                continue
            if torch.isfinite(torch.stack(torch.aminmax(values))).all():
                continue
            bad = ~torch.isfinite(values.reshape(len(values), -1))
            samples = bad.any(dim=1)
            raise DataError(
                f"the {task} data{where}: the {split} hold non-finite values (NaN or infinity): {int(bad.sum())} "
                f"in {int(samples.sum())} of {len(values)} samples, the first in sample {int(samples.nonzero()[0])}; "
                "fix or remove those samples"
            )

    def to(self, device: torch.device) -> TaskData:
        return TaskData(
            self.pool_x.to(device), self.pool_y.to(device), self.test_x.to(device), self.test_y.to(device), self.source
        )


class Task(ABC):
    """A benchmark task. Subclass it, set the class attributes, and decorate with ``@register_task``.

    The target model returned by :meth:`make_model` maps inputs [B, ...] to outputs (logits
    [B, C] for classification) and provides ``embed(x) -> [B, d]``, its penultimate features.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    metric: ClassVar[Metric]
    protocol: ClassVar[Protocol]
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.EMBEDDINGS})
    generative: ClassVar[GenerativeSpec | None] = None  # set (with Capability.GENERATIVE) to offer one
    augmentation: ClassVar[str | None] = None  # what :meth:`augment` does, for tasks that offer it
    target_label: ClassVar[str] = "label"  # what a target is, in figures
    target_scale: ClassVar[float] = 1.0  # target * target_scale is in the units of target_label
    pool_size: int | None = None  # the full pool's size when known before loading (sizes are checked early)
    #: A folder where the task may keep what is costly to rebuild (labels, decoded data), set by
    #: the harness (its cache folder, ``BENCH_CACHE``) before :meth:`load`; None: cache nothing.
    cache_dir: Path | None = None
    #: CPU processes the task may start beside torch (e.g. a labeler's worker pool), set by the
    #: harness from ``--threads``; None: as many as the machine has cores.
    workers: int | None = None
    #: Whether the task may show progress bars (the harness sets False for ``--quiet``).
    progress: bool = True

    @abstractmethod
    def load(self, data_root: Path, download: bool = True) -> TaskData:
        """Read the full pool and test set (on the CPU); raise DataNotFoundError when missing."""

    @abstractmethod
    def make_model(self) -> nn.Module:
        """A freshly initialised target model F (the caller seeds torch beforehand)."""

    @abstractmethod
    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The training loss, averaged over the batch."""

    @abstractmethod
    def scores(self, output: Tensor, target: Tensor) -> dict[str, float]:
        """Metric values of outputs against targets for the whole test set; the first key is
        ``metric.name``, any others are extra columns of ``rounds.csv``."""

    def extra_metrics(self) -> list[str]:
        """Names of the extra metrics :meth:`scores` returns after the headline one."""
        return []

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """A randomly augmented copy of a training batch ``x`` [B, ...] (same shape and device),
        drawing from the CPU ``generator`` (tasks that set ``augmentation`` only)."""
        raise NotImplementedError(f"task {self.name!r} has no data augmentation")

    def label_inputs(self, x: Tensor) -> Labels:
        """Label synthesized inputs [B, ...] (tasks with Capability.SYNTHETIC_LABELS only)."""
        raise NotImplementedError(f"task {self.name!r} has no labeler for synthetic inputs")

    def realism(self, sets: RealismSets, data: TaskData, seed: int) -> Realism | None:
        """How real generated inputs look by this task's own measures, beside real ones: the third
        part of a generative model's latent-quality report. ``data`` is the task's data as loaded
        (labels included, e.g. to train a reference model); ``seed`` seeds any draw (the caller
        isolates torch's global RNG). Default None: the harness measures the Frechet distance of
        each set to the pool samples in the features of a reference F trained on the labeled pool
        (:func:`bench.generative.realism.frechet_realism`; nothing for a task without embeddings)."""
        return None
