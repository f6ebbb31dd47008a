"""The progressive protocol (paper Sec. 3.2) with a paired, seeded design.

Round t = 1 trains F on the initial labeled set; after training in round t the metric on the
test set is recorded, the strategy proposes ``increment`` samples, they are labeled and added,
and round t + 1 trains on the union. Within a repeat every strategy starts from the same initial
labeled set, the same initial weights of F and the same mini-batch shuffling seed.

One (strategy, repeat) is a unit of work (:mod:`bench.run.units`); :class:`UnitState` holds what it
carries from round to round and saves and restores it, so a unit stopped after any round goes
on with the same numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.run.diagnostics import Diagnostics, diagnose
from bench.run.plan import Plan, class_columns
from bench.run.probes import Probe, is_probed
from bench.run.results import RoundRecord
from bench.run.validation import HeldOut
from bench.training import inference_batch, predict, train_epochs
from labelers.lookup import LookupLabeler
from strategies.base import Selection, SelectionContext, Strategy
from tasks.base import Capability, Labels, Task, TaskData, make_optimizer


class StrategyError(RuntimeError):
    """A strategy broke its contract (wrong count, duplicate or already-labeled indices)."""


class TrainingDiverged(RuntimeError):
    """F's weights are no longer finite after a round's training (e.g. a learning rate far too
    large); the unit stops rather than report chance-level numbers as results."""


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat`` of a run seeded ``seed`` (a 31-bit integer)."""
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0] >> 1)


def strategy_rng(seed: int, strategy: str) -> np.random.Generator:
    """The generator a strategy draws from in a repeat with seed ``seed``."""
    return np.random.default_rng([seed, zlib.crc32(strategy.encode())])


def initial_indices(seed: int, pool_size: int, k: int, held_out: np.ndarray | None = None) -> np.ndarray:
    """The shared random initial labeled set of a repeat (int64 [k]), drawn from the pool
    indices not ``held_out`` (the repeat's validation set)."""
    rng = np.random.default_rng(seed)
    if held_out is None or len(held_out) == 0:
        return rng.choice(pool_size, size=k, replace=False).astype(np.int64)
    return rng.choice(np.setdiff1d(np.arange(pool_size), held_out), size=k, replace=False).astype(np.int64)


def initial_weights(task: Task, seed: int) -> dict[str, Tensor]:
    """The shared initial weights of F in a repeat (a CPU state dict)."""
    torch.manual_seed(seed)
    return copy.deepcopy(task.make_model().state_dict())


def fresh_weights(task: Task, seed: int, t: int) -> dict[str, Tensor]:
    """F's weights for round ``t`` under ``start="fresh"``: a new initialisation from a seed of
    its own, shared by every strategy of the repeat (a CPU state dict). Torch's random stream
    is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([seed, t]).generate_state(1)[0]))
        return task.make_model().state_dict()


def selection_context(
    task: Task,
    model: torch.nn.Module,
    pool_x: Tensor,
    labeled: np.ndarray,
    train_x: Tensor,
    train_y: Tensor,
    rng: np.random.Generator,
    t: int,
    score_dtype: torch.dtype = torch.float32,
    generative: Any = None,
    label_inputs: Callable[[Tensor], Labels] | None = None,
) -> SelectionContext:
    """The :class:`SelectionContext` after round ``t``: the one place that builds it (the loop,
    the contract tests in :mod:`bench.testing` and the benchmarks all call this). Inference runs
    in the batch size of ``pool_x``'s device; ``label_inputs`` defaults to the task's labeler
    when it has one."""
    if label_inputs is None and Capability.SYNTHETIC_LABELS in task.capabilities:
        label_inputs = task.label_inputs
    batch_size = inference_batch(pool_x.device)
    infer = functools.partial(_infer, model, batch_size)
    return SelectionContext(
        task=task,
        model=model,
        pool_x=pool_x,
        labeled=labeled,
        train_x=train_x,
        train_y=train_y,
        rng=rng,
        round=t,
        batch_size=batch_size,
        infer=infer,
        score_dtype=score_dtype,
        generative=generative,
        label_inputs=label_inputs,
    )


def _infer(
    model: torch.nn.Module, batch_size: int, fn: Callable[[Tensor], Tensor], x: Tensor, dropout: bool = False
) -> Tensor:
    return predict(model, x, batch_size, fn, dropout=dropout)


def min_class_count(labels: Tensor, classes: np.ndarray) -> int:
    """The smallest number of ``labels`` (class indices) of any of ``classes`` (0 for a class
    with none)."""
    counts = np.bincount(labels.cpu().numpy(), minlength=int(classes.max()) + 1)
    return int(counts[classes].min())


def balanced_accuracy(outputs: Tensor, targets: Tensor, accuracy: float) -> float:
    """The mean over the classes of ``targets`` of the recall of ``outputs`` (logits or
    probabilities [N, C], argmax as the prediction), in the units of the task's own ``accuracy``
    of these outputs: percent when that is nearer 100 times the fraction correct than the fraction
    itself, else a fraction (with none correct both are 0)."""
    y = targets.cpu().numpy()
    hit = outputs.argmax(dim=1).cpu().numpy() == y
    totals = np.bincount(y)
    hits = np.bincount(y[hit], minlength=len(totals))
    present = totals > 0
    recall = float((hits[present] / totals[present]).mean())
    fraction = float(hit.mean())
    return recall * (100.0 if abs(accuracy - 100.0 * fraction) < abs(accuracy - fraction) else 1.0)


def fingerprint(model: torch.nn.Module) -> dict[str, Tensor]:
    """A cheap checksum of each floating tensor of ``model``'s state (its sum and the sum of its
    absolute values, float64), to tell whether a strategy changed F: one pass over the weights."""
    return {
        key: torch.stack([value.double().sum(), value.double().abs().sum()])
        for key, value in model.state_dict().items()
        if value.is_floating_point()
    }


def _few(values: np.ndarray, n: int = 8) -> str:
    """The first ``n`` of ``values`` as a list, with how many more there are."""
    shown = values[:n].tolist()
    return f"{shown}" + (f" and {len(values) - n} more" if len(values) > n else "")


class TrainingSet:
    """The growing labeled set of one (strategy, repeat): pool samples and synthesized ones."""

    def __init__(self, data: TaskData, labeler: LookupLabeler) -> None:
        self.data, self.labeler = data, labeler
        self.sources: list[np.ndarray] = []  # pool index per sample, -1 for synthesized
        self._x: list[Tensor] = []
        self._y: list[Tensor] = []
        self._labeled = np.zeros(len(data.pool_x), dtype=bool)
        self.latents: list[Tensor] = []  # latent codes of synthesized samples, when reported
        self.scores: list[np.ndarray] = []  # per sample, what its strategy ranked it by (NaN: none given)

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
        """Enforce the contract: exactly k new, distinct, in-range, unlabeled pool indices, or k
        synthesized inputs with one target each. ``who`` names the strategy, task and round; a
        message adds k and the offending values."""
        if len(selection) != k:
            raise StrategyError(f"{who} returned {len(selection)} samples for k={k}; return exactly k")
        if selection.indices is None:
            if selection.targets is None or len(selection.targets) != len(selection.inputs):
                targets = "no targets" if selection.targets is None else f"{len(selection.targets)} targets"
                raise StrategyError(
                    f"{who} returned {len(selection.inputs)} synthesized inputs with {targets} for k={k}; "
                    f"label each through context.label_inputs"
                )
            return
        idx, n = selection.indices, len(self._labeled)
        outside = idx[(idx < 0) | (idx >= n)]
        if len(outside):
            raise StrategyError(f"{who} returned pool indices outside 0..{n - 1} for k={k}: {_few(outside)}")
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise StrategyError(
                f"{who} returned duplicate pool indices for k={k}: {_few(values[counts > 1])} "
                f"(each {_few(counts[counts > 1])} times)"
            )
        if self._labeled[idx].any():
            raise StrategyError(
                f"{who} returned already-labeled pool indices for k={k}: {_few(idx[self._labeled[idx]])}; "
                f"pick from context.unlabeled"
            )

    def add(self, selection: Selection) -> None:
        """Append the selection: pool samples with their looked-up labels, or synthesized
        inputs with the targets the strategy obtained from the task's labeler."""
        self.scores.append(
            selection.scores.astype(np.float32)
            if selection.scores is not None
            else np.full(len(selection), np.nan, np.float32)
        )
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

    def state_dict(self) -> dict[str, Any]:
        """The set as chunks in the order added: pool indices, or synthesized inputs and targets."""
        chunks, start = [], 0
        for sources in self.sources:
            end = start + len(sources)
            if not (len(sources) and sources[0] < 0):
                chunks.append({"indices": torch.from_numpy(sources)})
            else:
                chunks.append({"inputs": self.x[start:end], "targets": self.y[start:end]})
            start = end
        return {"chunks": chunks, "latents": list(self.latents), "scores": [torch.from_numpy(s) for s in self.scores]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Rebuild the set from :meth:`state_dict`'s output (on the CPU) onto ``device``."""
        for chunk in state["chunks"]:
            if "indices" in chunk:
                self.add(Selection(indices=chunk["indices"].numpy()))
            else:
                self.add(Selection(inputs=chunk["inputs"].to(device), targets=chunk["targets"].to(device)))
        self.latents = list(state["latents"])
        if "scores" in state:  # a checkpoint written before scores were kept has none
            self.scores = [s.numpy() for s in state["scores"]]

    @property
    def all_scores(self) -> np.ndarray | None:
        """Every sample's score, in the order added (float32, NaN where its strategy gave none);
        None when no selection had scores."""
        scores = np.concatenate(self.scores) if self.scores else np.empty(0, np.float32)
        return scores if np.isfinite(scores).any() else None

    @property
    def x(self) -> Tensor:
        return self._x[0]

    @property
    def y(self) -> Tensor:
        return self._y[0]


@dataclass
class Timer:
    """Accumulates seconds per phase (train, eval, select, label, diagnose)."""

    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("train", "eval", "select", "label", "diagnose"), 0.0)
    )

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


OnRound = Callable[[RoundRecord, np.ndarray, "np.ndarray | None"], None]
OnCheckpoint = Callable[[int, dict[str, Any]], None]
OnProbe = Callable[["Probe"], None]


def run_progressive(
    plan: Plan,
    data: TaskData,
    strategy_cls: type[Strategy],
    repeat: int,
    on_round: OnRound,
    generative: Any = None,
    on_checkpoint: OnCheckpoint | None = None,
    resume: dict[str, Any] | None = None,
    on_probe: OnProbe | None = None,
) -> None:
    """Run the T rounds of one strategy in one repeat (a unit of work).

    After each round, ``on_round(record, sources, latents)`` gets the row, the pool index of every
    training sample (-1 if synthesized) and the latent codes of the synthesized ones (None when
    there are none). After each round but the last, once the next round's samples are labeled,
    ``on_checkpoint(t, state)`` gets everything needed to go on from there (see
    :meth:`UnitState.state_dict`); ``resume`` is such a state, and the unit continues from it
    with the same numbers as if it had never stopped. ``on_probe`` gets the :class:`Probe` of a
    plug-in strategy's first selection (see :func:`bench.run.probes.is_probed`).
    """
    unit = UnitState(plan, data, strategy_cls, repeat, generative, probe=is_probed(strategy_cls, repeat))
    if resume is None:
        unit.propose(0, plan.protocol.initial, initial=True)
        first = 1
    else:
        unit.load_state_dict(resume)
        first = int(resume["round"]) + 1
    for t in range(first, plan.protocol.rounds + 1):
        record, sources, latents, scores = unit.train_and_evaluate(t)
        on_round(record, sources, latents, scores)
        if t < plan.protocol.rounds:
            unit.propose(t, plan.protocol.increment, initial=False)
            probe, unit.probe = unit.probe, None
            if probe is not None and on_probe is not None:
                on_probe(probe)
            if on_checkpoint is not None:
                on_checkpoint(t, unit.state_dict(t))


class UnitState:
    """Everything one (strategy, repeat) carries from round to round: F and its optimizer, the
    training set, every random generator it draws from, the strategy and its timings."""

    def __init__(
        self,
        plan: Plan,
        data: TaskData,
        strategy_cls: type[Strategy],
        repeat: int,
        generative: Any = None,
        probe: bool = False,
    ) -> None:
        task, device = plan.task, plan.device
        self.plan, self.data, self.generative = plan, data, generative
        self.name = strategy_cls.name
        self.repeat = repeat
        self.seed = repeat_seed(plan.config.seed, repeat)
        self.held_out = HeldOut.draw(data, self.seed, plan.config.validation)  # None without --validation
        held = None if self.held_out is None else self.held_out.indices
        self.init_idx = initial_indices(self.seed, len(data.pool_x), plan.protocol.initial, held)
        self.init_state = initial_weights(task, self.seed)
        self.strategy = plan.make_strategy(strategy_cls)
        torch.manual_seed(self.seed)
        self.model = task.make_model().to(device)
        self.model.load_state_dict(self.init_state)
        self.optimizer = self.new_optimizer()
        self.shuffle = torch.Generator().manual_seed(self.seed)
        self.rng = strategy_rng(self.seed, self.name)
        self.timer = Timer()
        self.training = TrainingSet(data, LookupLabeler(data.pool_y))
        self.n_rejected = 0  # candidates refused while building the latest additions
        self.diagnostics = Diagnostics()  # of the latest additions (bench.run.diagnostics); NaN when not measured
        self.probing = probe  # select twice from the same state after round 1 (see is_probed())
        self.probe: Probe | None = None  # its outcome, until reported
        self.class_columns = class_columns(task)  # the class-balance columns this task's rows hold
        #: a classifier's classes present in the pool (int64 numpy), which min_class_labeled counts over
        self.pool_classes = np.unique(data.pool_y.cpu().numpy()) if self.class_columns else None
        self.label_inputs = None
        if Capability.SYNTHETIC_LABELS in task.capabilities:
            self.label_inputs = lambda x: self.timer.timed("label", task.label_inputs, x)

    def new_optimizer(self) -> torch.optim.Optimizer:
        """The protocol's optimizer over F's parameters, in its initial state."""
        protocol = self.plan.protocol
        return make_optimizer(protocol.optimizer, self.model.parameters(), protocol.lr, protocol.optimizer_options)

    def context(self, t: int) -> SelectionContext:
        """The selection context after round ``t``: the pool without the validation samples, if any."""
        data, training, held_out = self.data, self.training, self.held_out
        return selection_context(
            self.plan.task,
            self.model,
            data.pool_x if held_out is None else held_out.pool_x,
            training.pool_indices if held_out is None else held_out.to_rows(training.pool_indices),
            training.x if len(training) else data.pool_x[:0],
            training.y if len(training) else data.pool_y[:0],
            self.rng,
            t,
            self.plan.score_dtype,
            self.generative,
            self.label_inputs,
        )

    def propose(self, t: int, k: int, initial: bool) -> None:
        """Ask the strategy for ``k`` samples after round ``t``, check them and label them."""
        timer = self.timer
        who = f"strategy {self.name!r} on task {self.plan.task.name!r} (round {t})"
        before, mode = fingerprint(self.model), self.model.training
        first = self._select_and_rewind(t, k) if self.probing and t == 1 and not initial else None
        start = time.perf_counter()
        label_before = timer.seconds["label"]
        ctx = self.context(t)
        selection = self.strategy.initial(ctx, k) if initial else self.strategy.select(ctx, k)
        chosen = selection is not None  # else the shared initial set, already pool indices
        if selection is None:
            selection = Selection(indices=self.init_idx)
        changed = [key for key, value in fingerprint(self.model).items() if not torch.equal(value, before[key])]
        if changed or self.model.training != mode:
            what = f"F's {', '.join(changed[:3])}" if changed else f"F's mode (training={self.model.training})"
            raise StrategyError(
                f"{who} changed {what} while selecting; a strategy must leave the target model as it "
                f"is (score it through the context, or change a copy: copy.deepcopy(context.model))"
            )
        if first is not None:
            same = isinstance(first, Selection) and first.same_as(selection)
            shown = first.summary() if isinstance(first, Selection) else repr(first)
            self.probe = Probe(
                same,
                f"selected twice from the same state after round {t} of repeat {self.repeat} (k={k}): "
                + (f"the same {selection.summary()}" if same else f"{shown}, then {selection.summary()}"),
            )
        # labeling done inside the strategy (synthetic inputs) is label time, not select time
        timer.seconds["select"] += time.perf_counter() - start - (timer.seconds["label"] - label_before)
        if chosen and self.held_out is not None and selection.indices is not None:
            selection = self._to_pool(selection, k, who)
        self.training.check(selection, k, who)
        self.diagnostics = Diagnostics()
        if not initial and self.plan.config.diagnostics:
            self.diagnostics = timer.timed("diagnose", self.diagnose, selection)
        timer.timed("label", self.training.add, selection)
        self.n_rejected = selection.n_rejected

    def _to_pool(self, selection: Selection, k: int, who: str) -> Selection:
        """A strategy's picks, rows of the pool it saw (the pool without the validation samples),
        as pool indices; rows outside that pool are refused here, where their numbers mean something."""
        rows, n = selection.indices, len(self.held_out.selectable)
        outside = rows[(rows < 0) | (rows >= n)]
        if len(outside):
            raise StrategyError(
                f"{who} returned pool indices outside 0..{n - 1} (the pool it was given: the validation samples "
                f"are held out) for k={k}: {_few(outside)}"
            )
        return dataclasses.replace(selection, indices=self.held_out.to_pool(rows))

    def _select_and_rewind(self, t: int, k: int) -> Any:
        """The strategy's selection after round ``t``, with every random stream, the strategy's
        ``state_dict`` and the timings put back as they were, so that the selection that follows
        starts from the same state (and is not timed twice)."""
        cuda = self.plan.device.type == "cuda"
        saved = (
            copy.deepcopy(self.strategy.state_dict()),
            self.rng.bit_generator.state,
            torch.get_rng_state(),
            torch.cuda.get_rng_state(self.plan.device) if cuda else None,
            dict(self.timer.seconds),
        )
        try:
            return self.strategy.select(self.context(t), k)
        finally:
            state, self.rng.bit_generator.state, torch_rng, cuda_rng, self.timer.seconds = saved
            self.strategy.load_state_dict(state)
            torch.set_rng_state(torch_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.plan.device)

    def diagnose(self, selection: Selection) -> Diagnostics:
        """How hard, balanced and novel ``selection`` is under F now, before it joins the
        training set (pool picks with their labels, synthesized ones with their targets)."""
        data, training = self.data, self.training
        if selection.indices is not None:
            rows = torch.as_tensor(selection.indices, device=data.pool_x.device)
            picks_x, picks_y = data.pool_x[rows], data.pool_y[rows]
        else:
            picks_x, picks_y = selection.inputs, selection.targets
        train_x = training.x if len(training) else data.pool_x[:0]
        return diagnose(
            self.plan.task,
            self.model,
            data.pool_x,
            data.pool_y,
            training.pool_indices,
            train_x,
            picks_x,
            picks_y,
            self.seed,
            self.plan.score_dtype,
        )

    def train_and_evaluate(self, t: int) -> tuple[RoundRecord, np.ndarray, np.ndarray | None]:
        """Round ``t``: train F on the training set, score it on the test set (and the validation
        set, if any); the row, the training set's sources and its synthesized samples' latent codes."""
        plan, task, protocol, training, timer = self.plan, self.plan.task, self.plan.protocol, self.training, self.timer
        if t > 1 and protocol.start != "warm":
            weights = self.init_state if protocol.start == "reset" else fresh_weights(task, self.seed, t)
            self.model.load_state_dict(weights)
            self.optimizer = self.new_optimizer()
        timer.timed(
            "train",
            train_epochs,
            self.model,
            self.optimizer,
            task.loss,
            training.x,
            training.y,
            protocol.epochs,
            protocol.batch_size,
            self.shuffle,
            task.augment if protocol.augment else None,
            plan.train_dtype,
        )
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDiverged(
                f"training diverged in round {t}: F's weights are not finite (optimizer "
                f"{protocol.optimizer}, lr {protocol.lr:g}); lower --lr"
            )
        outputs = timer.timed("eval", predict, self.model, self.data.test_x)
        scores = timer.timed("eval", task.scores, outputs, self.data.test_y)
        value = scores.pop(task.metric.name)
        if self.pool_classes is not None:  # a classifier: the class-balance columns
            scores["min_class_labeled"] = min_class_count(training.y, self.pool_classes)
        if "balanced_accuracy" in self.class_columns:
            scores["balanced_accuracy"] = timer.timed("eval", balanced_accuracy, outputs, self.data.test_y, value)
        if self.held_out is not None:  # the validation metric, after the test set's extra scores
            outputs = timer.timed("eval", predict, self.model, self.held_out.x)
            held = timer.timed("eval", task.scores, outputs, self.held_out.y)
            scores.update(n_validation=len(self.held_out.indices), val_value=held[task.metric.name])
        seconds = timer.take()
        record = RoundRecord(
            task=task.name,
            strategy=self.name,
            repeat=self.repeat,
            seed=self.seed,
            round=t,
            n_labeled=len(training),
            metric=task.metric.name,
            value=value,
            train_s=seconds["train"],
            select_s=seconds["select"],
            label_s=seconds["label"],
            eval_s=seconds["eval"],
            diagnose_s=seconds["diagnose"],
            n_synthetic=training.n_synthetic,
            n_rejected=self.n_rejected,
            diagnostics=self.diagnostics.row(),
            extra=scores,
        )
        latents = torch.cat(training.latents).numpy() if training.latents else None
        return record, np.concatenate(training.sources), latents, training.all_scores

    def state_dict(self, t: int) -> dict[str, Any]:
        """The state after round ``t`` and the labeling of round t + 1's additions: tensors and
        plain values only. Pool samples are kept as indices (their inputs are in the pool)."""
        cuda = self.plan.device.type == "cuda"
        return {
            "round": t,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "training": self.training.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "strategy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.plan.device) if cuda else None,
            "strategy": self.strategy.state_dict(),
            "pending_seconds": dict(self.timer.seconds),
            "n_rejected": self.n_rejected,
            "diagnostics": self.diagnostics.row(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (read back on the CPU)."""
        device = self.plan.device
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.training.load_state_dict(state["training"], device)
        self.shuffle.set_state(state["shuffle"])
        self.rng.bit_generator.state = state["strategy_rng"]
        self.strategy.load_state_dict(
            {k: v.to(device) if isinstance(v, Tensor) else v for k, v in state["strategy"].items()}
        )
        self.timer.seconds = {**Timer().seconds, **state["pending_seconds"]}  # older checkpoints lack phases
        self.n_rejected = int(state["n_rejected"])
        self.diagnostics = Diagnostics(**state.get("diagnostics", {}))  # checkpoints before diagnostics: none
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
