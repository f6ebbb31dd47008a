"""The interface between the harness and a sampling strategy.

Each round the harness hands a strategy a :class:`SelectionContext` (the trained target model,
the unlabeled pool, the current training set, a seeded RNG, batched inference) and asks
``select(context, k)`` for ``k`` pool indices, or for ``k`` new synthesized inputs. Pool labels
are never visible here. A strategy imports only this module, ``strategies`` (to register) and
``tasks.base``; everything the harness owns reaches it through the context.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from bench.generative.base import GenerativeModel
from tasks.base import Capability, Labels, Task, describe_capability

#: The harness's batched inference: ``infer(fn, x, dropout=False)`` is ``fn`` over ``x`` [N, ...]
#: in batches, without gradients, F in eval mode (dropout layers active with ``dropout``),
#: concatenated [N, ...].
Infer = Callable[..., Tensor]


@dataclass
class SelectionContext:
    """What a strategy may look at when it selects; built fresh by the harness every round
    (by :func:`bench.run.loop.selection_context`, the one place that builds it).

    ``model`` is F after this round's training; strategies must not change its parameters.
    ``labeled`` holds the pool indices already labeled (in the order they were added);
    ``train_x``/``train_y`` are the whole current training set, synthesized samples included.
    Score F with :meth:`score` (or the cached :attr:`pool_probabilities`, :attr:`pool_embeddings`)
    and with :meth:`mc_probabilities` for Monte Carlo dropout: batched, in ``score_dtype``. Each
    of them raises :class:`CapabilityError` on a task that lacks what it needs (class
    probabilities, embeddings, dropout layers), rather than return meaningless numbers.
    """

    task: Task
    model: nn.Module
    pool_x: Tensor  # [N, ...] on device
    labeled: np.ndarray  # int64 [n_labeled_from_pool]
    train_x: Tensor  # [n_train, ...] on device
    train_y: Tensor  # [n_train, ...] on device
    rng: np.random.Generator  # seeded per (repeat, strategy)
    round: int  # t of the round just trained (1-based)
    batch_size: int  # of the harness's batched inference, for strategies that batch their own work
    infer: Infer  # the harness's batched inference (see :data:`Infer`); use :meth:`score`
    score_dtype: torch.dtype = torch.float32  # precision of pool_probabilities and embed
    generative: GenerativeModel | None = None  # the task's trained generative model (E, G), when the strategy needs one
    label_inputs: Callable[[Tensor], Labels] | None = None  # the task's labeler (timed as label_s)

    @property
    def device(self) -> torch.device:
        return self.pool_x.device

    @property
    def unlabeled(self) -> np.ndarray:
        """Pool indices not yet labeled, ascending (int64)."""
        mask = np.ones(len(self.pool_x), dtype=bool)
        mask[self.labeled] = False
        return np.flatnonzero(mask)

    def need(self, capability: str, what: str) -> None:
        """Raise :class:`CapabilityError` unless the task provides ``capability``, which ``what``
        (e.g. ``"context.mc_probabilities"``) needs."""
        if capability not in self.task.capabilities:
            raise CapabilityError(capability, what, self.task.name)

    def score(self, fn: Callable[[Tensor], Tensor], x: Tensor | None = None, dropout: bool = False) -> Tensor:
        """``fn(batch)`` over ``x`` (default: the pool) in batches, without gradients, F in eval
        mode (its dropout layers active with ``dropout``; the task must provide
        :attr:`Capability.DROPOUT`), computed in ``score_dtype``; float32 [N, ...] on the device."""
        if dropout:
            self.need(Capability.DROPOUT, "scoring with dropout active (context.mc_probabilities or score)")
            if not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in self.model.modules()):
                raise CapabilityError(
                    Capability.DROPOUT,
                    "scoring with dropout active",
                    self.task.name,
                    f"task {self.task.name!r} declares {Capability.DROPOUT!r}, but its target model has no "
                    f"dropout layer (torch.nn.Dropout and kin), so every pass would be the same; give F "
                    f"dropout layers or drop the capability",
                )
        x = self.pool_x if x is None else x
        with torch.autocast(self.device.type, dtype=self.score_dtype, enabled=self.score_dtype != torch.float32):
            return self.infer(lambda b: fn(b).float(), x, dropout=dropout)

    @cached_property
    def pool_probabilities(self) -> Tensor:
        """Softmax of F over the whole pool, float32 [N, C] on device (computed once per round)."""
        self.need(Capability.PROBABILITIES, "context.pool_probabilities")
        return self.score(lambda b: torch.softmax(self.model(b).float(), dim=1))

    def mc_probabilities(self, passes: int, x: Tensor | None = None) -> Tensor:
        """Softmax of F over ``x`` (default: the pool) in ``passes`` stochastic forward passes
        with dropout active (Monte Carlo dropout), float32 [passes, N, C] on device. The dropout
        masks come from a seed drawn from ``rng``: reproducible, and the run's other random
        streams are left as they were. Needs a task with :attr:`Capability.PROBABILITIES` and
        :attr:`Capability.DROPOUT` (a strategy using it declares both in ``requires``)."""
        self.need(Capability.PROBABILITIES, "context.mc_probabilities")
        self.need(Capability.DROPOUT, "context.mc_probabilities")
        seed = int(self.rng.integers(2**63))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)

            def passes_of(batch: Tensor) -> Tensor:  # [B, passes, C]
                return torch.stack([torch.softmax(self.model(batch).float(), dim=1) for _ in range(passes)], 1)

            return self.score(passes_of, x, dropout=True).transpose(0, 1)

    def embed(self, x: Tensor) -> Tensor:
        """F's penultimate features of ``x``, float32 [len(x), d] on device."""
        self.need(Capability.EMBEDDINGS, "context.embed (or context.pool_embeddings)")
        return self.score(lambda b: self.model.embed(b).flatten(1), x)  # type: ignore[operator]  # F.embed: the task contract

    @cached_property
    def pool_embeddings(self) -> Tensor:
        """F's penultimate features of the whole pool [N, d] (computed once per round)."""
        return self.embed(self.pool_x)


#: What a strategy whose selections differ between identical runs is told (by the contract checks,
#: a run's reproducibility probe and ``list``).
RNG_ADVICE = (
    "draw random numbers only from context.rng (numpy's and Python's global random state are not seeded "
    "by the harness; torch's global stream is)"
)


class CapabilityError(RuntimeError):
    """A strategy used something the task does not provide (a :class:`Capability`): the unit
    stops with this message instead of computing on what is not there. Declaring the capability
    in the strategy's ``requires`` lets the harness refuse such a pair before any work."""

    def __init__(self, capability: str, what: str, task: str, why: str | None = None) -> None:
        self.capability = capability
        super().__init__(
            why
            or f"{what} needs {describe_capability(capability)}, which task {task!r} does not provide; "
            f"a strategy that uses it declares {capability!r} in its `requires` (so that the harness "
            f"refuses such a task before any work)"
        )


class SelectionError(RuntimeError):
    """A strategy cannot fill a round (e.g. its labeler rejects every candidate); the harness
    records it, stops that (strategy, repeat) and goes on with the rest of the run."""


@dataclass
class Selection:
    """A strategy's answer: pool ``indices`` (int64 [k]) or synthesized ``inputs`` [k, ...].

    A strategy that synthesizes inputs labels them through ``context.label_inputs`` and returns
    their ``targets`` too; ``latents`` optionally records where they came from (for audit).
    ``scores`` optionally records, for audit, the quantity the strategy ranked each pick by
    (float [k], in pick order: an entropy, a distance, a discriminator output); it is written to
    ``labeled.npz`` beside the picks and changes nothing else. ``n_rejected`` counts candidates
    the strategy refused and replaced (reported in rounds.csv).
    """

    indices: np.ndarray | None = None
    inputs: Tensor | None = None
    targets: Tensor | None = None
    latents: Tensor | None = None
    scores: np.ndarray | None = None
    n_rejected: int = 0

    def __post_init__(self) -> None:
        if (self.indices is None) == (self.inputs is None):
            raise ValueError("a Selection holds either pool indices or synthesized inputs")
        if self.indices is not None:
            given = self.indices.cpu().numpy() if isinstance(self.indices, Tensor) else np.asarray(self.indices)
            if given.size and given.dtype.kind not in "iu":
                raise ValueError(
                    f"a Selection's pool indices must be integers, not {given.dtype} "
                    f"(e.g. {given.reshape(-1)[:5].tolist()}); return positions in the pool, such as "
                    f"context.unlabeled[order]"
                )
            self.indices = given.astype(np.int64).reshape(-1)
        if self.scores is not None:
            scores = self.scores.detach().cpu().numpy() if isinstance(self.scores, Tensor) else np.asarray(self.scores)
            if scores.dtype.kind not in "iuf":
                raise ValueError(f"a Selection's scores must be numbers, one per pick, not {scores.dtype}")
            self.scores = scores.astype(np.float64).reshape(-1)
            if len(self.scores) != len(self):
                raise ValueError(
                    f"a Selection has {len(self.scores)} scores for {len(self)} picks; "
                    f"give one score per pick, in pick order"
                )

    def __len__(self) -> int:
        if self.indices is not None:
            return len(self.indices)
        assert self.inputs is not None  # __post_init__: one of the two is set
        return len(self.inputs)

    def same_as(self, other: Selection) -> bool:
        """Whether ``other`` picks the same pool indices in the same order, or synthesizes the same
        inputs and targets (bit for bit)."""
        if self.indices is not None:
            return other.indices is not None and np.array_equal(self.indices, other.indices)
        assert self.inputs is not None  # __post_init__: one of the two is set
        if other.inputs is None or not torch.equal(self.inputs, other.inputs):
            return False
        if self.targets is None or other.targets is None:
            return self.targets is other.targets
        return torch.equal(self.targets, other.targets)

    def summary(self) -> str:
        """The selection in a few words, for messages: its first pool indices, or the sum of its inputs."""
        if self.indices is not None:
            return f"pool indices {self.indices[:8].tolist()}{' ...' if len(self) > 8 else ''}"
        assert self.inputs is not None  # __post_init__: one of the two is set
        return f"{len(self)} synthesized inputs (sum {float(self.inputs.double().sum()):.9g})"


class Strategy(ABC):
    """A sampling strategy. Subclass it, set ``name``/``description``/``requires``, implement
    :meth:`select`, and decorate the class with ``@register_strategy``.

    Constructor keyword arguments are the strategy's options (e.g. ``alpha``); the harness passes
    the ones the user set that the constructor accepts.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # capabilities (see tasks.base.Capability): all that any of its options may need
    requires: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def select(self, context: SelectionContext, k: int) -> Selection:
        """Propose ``k`` new samples to label, given the state after round ``context.round``."""

    def initial(self, context: SelectionContext, k: int) -> Selection | None:
        """The round-1 set; ``None`` (the default) takes the harness's shared random initial set."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What the strategy carries from one round to the next and cannot rebuild from the
        selection context (tensors and plain values), saved in every checkpoint so that a resumed
        run picks the same samples. Empty by default; a cache the strategy can recompute (such as
        SNN's pool codes) does not belong here."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (tensors already on the run's device)."""
        if state:
            raise NotImplementedError(f"strategy {self.name!r} saved state but cannot load it")

    @classmethod
    def requirements(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The capabilities the strategy needs with ``options`` (its constructor's keyword
        arguments as a run sets them; the others at their defaults): ``requires`` by default.
        Override it where an option changes what is used (e.g. a feature space), returning a
        part of ``requires``; the harness then plans (and refuses, and builds a generative model)
        by it."""
        return frozenset(cls.requires)

    @classmethod
    def refuses(cls, task: Task, options: Mapping[str, Any] | None = None) -> str | None:
        """Why this strategy, with ``options`` (as in :meth:`requirements`; None: its defaults),
        cannot run on ``task``, or None when it can. By default: the capabilities it needs that
        the task lacks; override it (calling this first) to refuse a task for reasons of the
        strategy's own. The harness refuses the pair with exit 2."""
        missing = sorted(set(cls.requirements(options or {})) - set(task.capabilities))
        if not missing:
            return None
        return f"it needs {' and '.join(map(describe_capability, missing))}, which {task.name} does not provide"
