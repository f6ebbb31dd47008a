"""How the contract checks drive the harness: classes registered for a block, the data root,
and a strategy's run (plan, data, generative model, the unit after round 1) built once per
(strategy, task, options, seed) and kept in a small cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.paths import cache_root, default_data_root
from bench.run.assembly import Assembly, assemble
from bench.run.checkpoint import from_bytes, to_bytes
from bench.run.config import RunConfig
from bench.run.loop import UnitState
from bench.run.plan import create_task
from bench.testing.blobs import Blobs
from strategies import STRATEGIES
from strategies.base import SelectionContext, Strategy
from tasks import TASKS
from tasks.base import Task

INITIAL = 30  # labeled samples before the checked selection
SUBSET = 400  # pool samples the checks use from a larger task
SEED = 0
StrategyLike = str | type[Strategy]
TaskLike = str | type[Task] | None
Options = dict[str, Any] | None


def data_root() -> Path:
    """Where the checks read tasks' data: ``$BENCH_DATA``, else the harness's default."""
    return default_data_root()


@contextmanager
def registered(*classes: type) -> Iterator[None]:
    """Within the block, each Task or Strategy class is registered under its ``name`` (unless it
    is already); its registry is restored after. The one way :class:`Blobs` is registered."""
    registries = [STRATEGIES if issubclass(cls, Strategy) else TASKS for cls in classes]
    with ExitStack() as stack:
        for registry in {id(r): r for r in registries}.values():
            stack.enter_context(registry.scoped())
        for cls, registry in zip(classes, registries):
            if cls.name not in registry or registry.get(cls.name) is not cls:
                registry.add(cls.name, cls)
        yield


_CACHE: OrderedDict[tuple, Any] = OrderedDict()  # the latest round-1 states and loaded tasks


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = build()
        while len(_CACHE) > 8:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


def _loaded(checkpoint: bytes, who: str) -> dict[str, Any]:
    """A checkpoint read back as the harness reads it; an AssertionError when it cannot be."""
    try:
        return from_bytes(checkpoint)
    except Exception as err:
        why = [line for line in str(err).splitlines() if "WeightsUnpickler error" in line] or [str(err)]
        raise AssertionError(
            f"{who}: its state_dict() does not survive a checkpoint (torch.save, then torch.load "
            f"with weights_only=True; keep to tensors and plain values): {why[0]}"
        ) from err


@dataclass
class _RoundOne:
    """What a run of the strategy builds (plan, data, generative model) and the checkpoint of a
    unit after round 1: every check starts from a fresh copy, since selecting draws from its RNGs."""

    run: Assembly
    who: str  # the strategy and task, as messages name them
    saved: bytes = b""
    training: bool = True  # F's train/eval mode after round 1 (not in a checkpoint)

    def trained(self) -> UnitState:
        """A unit that took its initial set and trained round 1, as the harness runs it."""
        unit = self._new()
        unit.propose(0, INITIAL, initial=True)
        unit.train_and_evaluate(1)
        return unit

    def unit(self) -> UnitState:
        """A fresh unit in the state after round 1, restored from its checkpoint."""
        if not self.saved:
            trained = self.trained()
            self.saved, self.training = to_bytes(trained.state_dict(1)), trained.model.training
        return self.restored(self.saved)

    def restored(self, saved: bytes) -> UnitState:
        unit = self._new()
        unit.load_state_dict(_loaded(saved, self.who))
        unit.model.train(self.training)
        return unit

    def _new(self) -> UnitState:
        plan = self.run.plan
        return UnitState(plan, self.run.data, plan.strategies[0], repeat=0, generative=self.run.generative)


@dataclass(frozen=True)
class _Subject:
    """The strategy class, the (registered) task's name and the options a check runs with."""

    strategy: type[Strategy]
    task: str
    options: dict[str, Any]

    def __str__(self) -> str:
        return f"strategy {self.strategy.name!r} on task {self.task!r}" + (
            f" with options {self.options}" if self.options else ""
        )

    def config(self, seed: int = SEED, task: str | None = None, options: Options = None) -> RunConfig:
        """Two rounds of the strategy on the task (400 pool samples of a larger one), on the CPU."""
        task = task or self.task
        subset = SUBSET if (create_task(task).pool_size or 0) > SUBSET else None
        return RunConfig(
            task=task,
            strategies=[self.strategy.name],
            rounds=2,
            initial=INITIAL,
            increment=1,
            epochs=2,
            seed=seed,
            device="cpu",
            score_dtype="float32",
            subset=subset,
            data_root=data_root(),
            download=False,
            quiet=True,
            strategy_options=dict(self.options if options is None else options),
        )

    def round_one(self, seed: int = SEED) -> _RoundOne:
        key = (
            "round 1",
            self.strategy,
            self.task,
            _factory(self.task),
            repr(sorted(self.options.items())),
            seed,
            data_root(),
            cache_root(),
        )
        return _cached(key, lambda: _RoundOne(assemble(self.config(seed)), str(self)))


def _factory(task: str) -> Any:
    """What the task's name is registered to now (None: unknown, as create_task will say)."""
    return TASKS.get(task) if task in TASKS else None


@contextmanager
def _checking(strategy: StrategyLike, task: TaskLike, options: Options) -> Iterator[_Subject]:
    """A check's subject; classes (and :class:`Blobs` when ``task`` is None) registered for the block."""
    task = Blobs if task is None else task
    with registered(*(c for c in (strategy, task) if isinstance(c, type))):
        cls = STRATEGIES.get(strategy) if isinstance(strategy, str) else strategy
        yield _Subject(cls, task if isinstance(task, str) else task.name, dict(options or {}))


def trained_context(task: TaskLike = None, seed: int = SEED) -> SelectionContext:
    """The selection context after round 1 of ``random`` on ``task`` (default :class:`Blobs`):
    F trained on INITIAL random pool samples, as a strategy sees it (for a plug-in's own tests)."""
    with _checking("random", task, None) as it:
        return it.round_one(seed).unit().context(1)
