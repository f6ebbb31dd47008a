"""The progressive protocol (paper Sec. 3.2) with a paired, seeded design.

Round t = 1 trains F on the initial labeled set; after training in round t the metric on the
test set is recorded, the strategy proposes ``increment`` samples, they are labeled and added,
and round t + 1 trains on the union. Within a repeat every strategy starts from the same initial
labeled set, the same initial weights of F and the same mini-batch shuffling seed.
"""

from __future__ import annotations

import copy
import inspect
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig, check_protocol, resolve_device
from bench.generative import load_or_train_vae
from bench.paths import cache_root
from bench.registry import UnknownNameError
from bench.results import LabeledLog, RoundRecord, RoundsWriter
from bench.training import predict, train_epochs
from labelers.lookup import LookupLabeler
from strategies import STRATEGIES
from strategies.base import Selection, SelectionContext, Strategy
from tasks import TASKS
from tasks.base import Capability, GenerativeSpec, Protocol, Task, TaskData


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


@dataclass
class Plan:
    """A validated run: the resolved task, strategies, protocol, device and data sizes."""

    config: RunConfig
    task: Task
    strategies: list[type[Strategy]]
    protocol: Protocol
    device: torch.device

    @property
    def strategy_names(self) -> list[str]:
        return [s.name for s in self.strategies]

    def make_strategy(self, cls: type[Strategy]) -> Strategy:
        """Instantiate a strategy with the options meant for it (see :func:`strategy_options`)."""
        return cls(**strategy_options(cls, self.config.strategy_options))


def strategy_options(cls: type[Strategy], options: dict[str, Any]) -> dict[str, Any]:
    """The options for strategy ``cls``: ``"<name>.<key>"`` entries, and plain ``"<key>"``
    entries that its constructor accepts (a scoped entry wins over a plain one)."""
    accepted = inspect.signature(cls).parameters
    chosen = {k: v for k, v in options.items() if "." not in k and k in accepted}
    prefix = f"{cls.name}."
    chosen.update({k[len(prefix):]: v for k, v in options.items() if k.startswith(prefix)})
    return chosen


def strategy_settings(cls: type[Strategy], options: dict[str, Any]) -> dict[str, Any]:
    """Every constructor option of strategy ``cls`` with the value it runs with."""
    settings = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    settings.update(strategy_options(cls, options))
    return settings


def check_options(strategies: list[type[Strategy]], options: dict[str, Any]) -> None:
    """Refuse options no chosen strategy accepts, and values a strategy's constructor rejects."""
    for key in options:
        scope, _, name = key.rpartition(".")
        owners = [c for c in strategies if (not scope or c.name == scope) and name in inspect.signature(c).parameters]
        if not owners:
            known = sorted({f"{c.name}.{p}" for c in strategies for p in inspect.signature(c).parameters})
            raise ConfigError(f"option {key!r} is not accepted by any chosen strategy "
                              f"({', '.join(c.name for c in strategies)}); options they accept: "
                              f"{', '.join(known) or 'none'}")
    for cls in strategies:
        try:
            cls(**strategy_options(cls, options))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"strategy {cls.name!r}: {err}") from None


def applicable_strategies(task: Task) -> list[str]:
    """Names of the registered strategies whose requirements ``task`` meets."""
    return [name for name in STRATEGIES.names() if not STRATEGIES.get(name).missing(task)]


def plan_run(config: RunConfig) -> Plan:
    """Check a configuration before any work; raise ConfigError naming the problem and fix."""
    try:
        task = TASKS.create(config.task)
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None
    names = config.strategies
    if names == ["all"]:
        names = applicable_strategies(task)
    if not names:
        raise ConfigError("no strategy given; use --strategy NAME[,NAME...] or --strategy all")
    if len(set(names)) != len(names):
        raise ConfigError(f"a strategy is listed twice in --strategy {','.join(names)}")
    strategies = []
    for name in names:
        try:
            cls = STRATEGIES.get(name)
        except UnknownNameError as err:
            raise ConfigError(str(err)) from None
        missing = cls.missing(task)
        if missing:
            raise ConfigError(
                f"strategy {name!r} does not apply to task {task.name!r}: it needs "
                f"{' and '.join(c.value for c in missing)}, which {task.name} does not provide. "
                f"Strategies that apply to {task.name}: {', '.join(applicable_strategies(task))}"
            )
        strategies.append(cls)
    if config.latent_dim is not None and config.latent_dim < 1:
        raise ConfigError(f"--latent-dim must be at least 1 (got {config.latent_dim})")
    if config.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1 (got {config.repeats})")
    if config.subset is not None and config.subset < 1:
        raise ConfigError(f"--subset must be at least 1 (got {config.subset})")
    check_options(strategies, config.strategy_options)
    protocol = config.protocol(task.protocol)
    check_protocol(protocol, config.subset or 2**62, f"--subset {config.subset}")
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return Plan(config, task, strategies, protocol, device)


def generative_spec(plan: Plan) -> GenerativeSpec | None:
    """The settings of the task's generative model when a chosen strategy needs one, else None."""
    if not any(Capability.GENERATIVE in s.requires for s in plan.strategies):
        return None
    return plan.task.generative.replace(latent_dim=plan.config.latent_dim)


def generative_model(plan: Plan, data: TaskData) -> Any:
    """The task's trained generative model when a chosen strategy needs one (else None):
    trained on the pool only, once per (task, pool, seed, settings), then loaded from the cache."""
    spec = generative_spec(plan)
    if spec is None:
        return None
    return load_or_train_vae(plan.task.name, data.pool_x, spec, plan.config.seed,
                             cache_root() / "generative", progress=not plan.config.quiet)


def load_data(plan: Plan) -> TaskData:
    """The task's data (subset if asked), checked against the protocol, on the device."""
    data = plan.task.load(Path(plan.config.data_root), download=plan.config.download)
    subset = plan.config.subset
    if subset is not None:
        if subset > len(data.pool_x):
            raise ConfigError(f"--subset {subset} is larger than the {plan.task.name} pool "
                              f"({len(data.pool_x)} samples); lower it")
        data = data.subset(subset, torch.Generator().manual_seed(plan.config.seed))
    check_protocol(plan.protocol, len(data.pool_x), f"the {plan.task.name} pool")
    return data.to(plan.device)


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
            rng=rng, round=t, batch_size=max(protocol.batch_size, 1024),
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
                    protocol.epochs, protocol.batch_size, shuffle)
        outputs = timer.timed("eval", predict, model, data.test_x, 1024)
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
