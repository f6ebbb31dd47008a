"""The progressive protocol (paper Sec. 3.2) with a paired, seeded design.

Round t = 1 trains F on the initial labeled set; after training in round t the metric on the
test set is recorded, the strategy proposes ``increment`` samples, they are labeled and added,
and round t + 1 trains on the union. Within a repeat every strategy starts from the same initial
labeled set, the same initial weights of F and the same mini-batch shuffling seed.
"""

from __future__ import annotations

import copy
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from bench.plan import Plan
from bench.results import RoundRecord
from bench.training import inference_batch, predict, train_epochs
from labelers.lookup import LookupLabeler
from strategies.base import Selection, SelectionContext, Strategy
from tasks.base import Capability, Task, TaskData


class StrategyError(RuntimeError):
    """A strategy broke its contract (wrong count, duplicate or already-labeled indices)."""


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat`` of a run seeded ``seed`` (a 31-bit integer)."""
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0] >> 1)


def strategy_rng(seed: int, strategy: str) -> np.random.Generator:
    """The generator a strategy draws from in a repeat with seed ``seed``."""
    return np.random.default_rng([seed, zlib.crc32(strategy.encode())])


def initial_indices(seed: int, pool_size: int, k: int) -> np.ndarray:
    """The shared random initial labeled set of a repeat (int64 [k])."""
    return np.random.default_rng(seed).choice(pool_size, size=k, replace=False).astype(np.int64)


def initial_weights(task: Task, seed: int) -> dict[str, Tensor]:
    """The shared initial weights of F in a repeat (a CPU state dict)."""
    torch.manual_seed(seed)
    return copy.deepcopy(task.make_model().state_dict())


class TrainingSet:
    """The growing labeled set of one (strategy, repeat): pool samples and synthesized ones."""

    def __init__(self, data: TaskData, labeler: LookupLabeler) -> None:
        self.data, self.labeler = data, labeler
        self.sources: list[np.ndarray] = []  # pool index per sample, -1 for synthesized
        self._x: list[Tensor] = []
        self._y: list[Tensor] = []
        self._labeled = np.zeros(len(data.pool_x), dtype=bool)
        self.latents: list[Tensor] = []  # latent codes of synthesized samples, when reported

    def __len__(self) -> int:
        return int(sum(len(s) for s in self.sources))

    @property
    def pool_indices(self) -> np.ndarray:
        order = np.concatenate(self.sources) if self.sources else np.empty(0, np.int64)
        return order[order >= 0]

    @property
    def n_synthetic(self) -> int:
        return int(sum((s < 0).sum() for s in self.sources))

    def check(self, selection: Selection, k: int, who: str) -> None:
        """Enforce the contract: exactly k new, distinct, in-range, unlabeled pool indices."""
        if len(selection) != k:
            raise StrategyError(f"{who} returned {len(selection)} samples, expected {k}")
        if selection.indices is None:
            if selection.targets is None or len(selection.targets) != len(selection.inputs):
                raise StrategyError(f"{who} returned synthesized inputs without one target each "
                                    f"(label them through context.label_inputs)")
            return
        idx = selection.indices
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self._labeled)):
            raise StrategyError(f"{who} returned pool indices outside 0..{len(self._labeled) - 1}")
        if len(np.unique(idx)) != len(idx):
            raise StrategyError(f"{who} returned duplicate pool indices")
        if self._labeled[idx].any():
            raise StrategyError(f"{who} returned already-labeled pool indices {idx[self._labeled[idx]][:5]}")

    def add(self, selection: Selection) -> None:
        """Append the selection: pool samples with their looked-up labels, or synthesized
        inputs with the targets the strategy obtained from the task's labeler."""
        if selection.indices is not None:
            idx = selection.indices
            self._labeled[idx] = True
            self.sources.append(idx)
            self._x.append(self.data.pool_x[torch.as_tensor(idx, device=self.data.pool_x.device)])
            self._y.append(self.labeler.label(idx))
        else:
            self.sources.append(np.full(len(selection.inputs), -1, dtype=np.int64))
            self._x.append(selection.inputs)
            self._y.append(selection.targets)
            if selection.latents is not None:
                self.latents.append(selection.latents.detach().cpu())
        self._x, self._y = [torch.cat(self._x)], [torch.cat(self._y)]

    @property
    def x(self) -> Tensor:
        return self._x[0]

    @property
    def y(self) -> Tensor:
        return self._y[0]


@dataclass
class Timer:
    """Accumulates seconds per phase (train, eval, select, label)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("train", "eval", "select", "label"), 0.0))

    def timed(self, phase: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def take(self) -> dict[str, float]:
        """The seconds so far, and reset."""
        taken, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        return taken


def run_progressive(
    plan: Plan,
    data: TaskData,
    strategy_cls: type[Strategy],
    repeat: int,
    seed: int,
    init_idx: np.ndarray,
    init_state: dict[str, Tensor],
    on_round: Callable[[RoundRecord, np.ndarray, np.ndarray | None], None],
    generative: Any = None,
) -> None:
    """Run the T rounds of one strategy in one repeat, calling ``on_round(record, sources,
    latents)`` after each round: the pool index of every training sample (-1 if synthesized)
    and the latent codes of the synthesized ones (None when there are none)."""
    task, protocol, device = plan.task, plan.protocol, plan.device
    name = strategy_cls.name
    strategy = plan.make_strategy(strategy_cls)
    torch.manual_seed(seed)
    model = task.make_model().to(device)
    model.load_state_dict(init_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.lr)
    shuffle = torch.Generator().manual_seed(seed)
    rng = strategy_rng(seed, name)
    timer = Timer()
    training = TrainingSet(data, LookupLabeler(data.pool_y))
    timed_label_inputs = None
    if Capability.SYNTHETIC_LABELS in task.capabilities:
        timed_label_inputs = lambda x: timer.timed("label", task.label_inputs, x)  # noqa: E731

    def context(t: int) -> SelectionContext:
        return SelectionContext(
            task=task, model=model, pool_x=data.pool_x, labeled=training.pool_indices,
            train_x=training.x if len(training) else data.pool_x[:0],
            train_y=training.y if len(training) else data.pool_y[:0],
            rng=rng, round=t, batch_size=inference_batch(device), score_dtype=plan.score_dtype,
            generative=generative, label_inputs=timed_label_inputs,
        )

    def propose(t: int, k: int, initial: bool) -> Selection:
        start = time.perf_counter()
        label_before = timer.seconds["label"]
        ctx = context(t)
        selection = strategy.initial(ctx, k) if initial else strategy.select(ctx, k)
        if selection is None:
            selection = Selection(indices=init_idx)
        # labeling done inside the strategy (synthetic inputs) is label time, not select time
        timer.seconds["select"] += time.perf_counter() - start - (timer.seconds["label"] - label_before)
        training.check(selection, k, f"strategy {name!r} (round {t})")
        timer.timed("label", training.add, selection)
        return selection

    selection = propose(0, protocol.initial, initial=True)
    for t in range(1, protocol.rounds + 1):
        if t > 1 and not plan.config.warm_start:
            model.load_state_dict(init_state)
            optimizer = torch.optim.Adam(model.parameters(), lr=protocol.lr)
        timer.timed("train", train_epochs, model, optimizer, task.loss, training.x, training.y,
                    protocol.epochs, protocol.batch_size, shuffle, task.augment if protocol.augment else None,
                    plan.train_dtype)
        outputs = timer.timed("eval", predict, model, data.test_x)
        scores = timer.timed("eval", task.scores, outputs, data.test_y)
        seconds = timer.take()
        value = scores.pop(task.metric.name)
        record = RoundRecord(
            task=task.name, strategy=name, repeat=repeat, seed=seed, round=t,
            n_labeled=len(training), metric=task.metric.name, value=value,
            train_s=seconds["train"], select_s=seconds["select"], label_s=seconds["label"],
            eval_s=seconds["eval"], n_synthetic=training.n_synthetic,
            n_rejected=selection.n_rejected, extra=scores,
        )
        latents = torch.cat(training.latents).numpy() if training.latents else None
        on_round(record, np.concatenate(training.sources), latents)
        if t < protocol.rounds:
            selection = propose(t, protocol.increment, initial=False)
