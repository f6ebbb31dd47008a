"""The contract every strategy and task must meet, shipped so that a plug-in's own tests run it.

After scikit-activeml's template suites. Each check drives the harness's own code (the plan, the
unit of work, the selection context, the checkpoint), so a plug-in that passes runs in
``python -m bench run``::

    from bench.testing import STRATEGY_CHECKS, check_strategy, check_task

    @pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
    def test_bald_meets_the_strategy_contract(check):
        check("bald")                        # a registered name, on the synthetic task Blobs
        check(BALD, options={"passes": 3})   # a class (registered for the check) with its options
        check("bald", task="digits")         # on your own task: a registered name or a Task class

    def test_digits_meets_the_task_contract():
        check_task("digits")                 # a registered name, a Task class or an instance

``check_strategy(strategy, task=None, options=None)`` and ``check_task(task)`` run every check
at once. ``options`` are what ``--option KEY=VALUE`` gives (``{"passes": 3}`` or
``{"bald.passes": 3}``); the harness's planning applies them, as in a run. Tasks read their data
from :func:`data_root` (``$BENCH_DATA``, as ``run`` does); missing data is an error, never a
silent skip. Without a ``task``, strategy checks run on :class:`Blobs`, a synthetic task with
every built-in capability that trains in milliseconds (``with registered(Blobs):`` registers it
for a block, as the checks do).

The plan, the data, the generative model and a unit's state after round 1 are built once per
(strategy, task, options, seed) and kept in a small cache, so the checks of one set share them;
each check starts from a fresh unit restored from that state's checkpoint, as a resumed run does.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.paths import cache_root, default_data_root
from bench.run.assembly import Assembly, assemble
from bench.run.checkpoint import from_bytes, to_bytes
from bench.run.config import ConfigError, RunConfig, check_protocol
from bench.run.loop import UnitState
from bench.run.plan import check_labels, create_task, plan_run, strategy_options
from bench.testing_blobs import Blobs, DropoutMLP
from strategies import STRATEGIES
from strategies.base import Selection, SelectionContext, Strategy
from tasks import TASKS
from tasks.base import Capability, Labels, Task, TaskData, describe_capability

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
        raise AssertionError(f"{who}: its state_dict() does not survive a checkpoint (torch.save, then torch.load "
                             f"with weights_only=True; keep to tensors and plain values): {why[0]}") from err


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
            f" with options {self.options}" if self.options else "")

    def config(self, seed: int = SEED, task: str | None = None, options: Options = None) -> RunConfig:
        """Two rounds of the strategy on the task (400 pool samples of a larger one), on the CPU."""
        task = task or self.task
        subset = SUBSET if (create_task(task).pool_size or 0) > SUBSET else None
        return RunConfig(task=task, strategies=[self.strategy.name], rounds=2, initial=INITIAL, increment=1,
                         epochs=2, seed=seed, device="cpu", score_dtype="float32", subset=subset,
                         data_root=data_root(), download=False, quiet=True,
                         strategy_options=dict(self.options if options is None else options))

    def round_one(self, seed: int = SEED) -> _RoundOne:
        key = ("round 1", self.strategy, self.task, _factory(self.task), repr(sorted(self.options.items())), seed,
               data_root(), cache_root())
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


def _same(a: Selection, b: Selection) -> bool:
    if a.indices is not None:
        return b.indices is not None and np.array_equal(a.indices, b.indices)
    return b.inputs is not None and torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def _show(s: Selection) -> str:
    if s.indices is not None:
        return f"pool indices {s.indices[:8].tolist()}{' ...' if len(s) > 8 else ''}"
    return f"{len(s)} synthesized inputs (sum {float(s.inputs.double().sum()):.9g})"


def returns_k_samples_the_harness_accepts(strategy: StrategyLike, task: TaskLike = None,
                                          options: Options = None) -> None:
    """For k = 1, 7, 25: exactly k new, distinct, unlabeled pool indices (int64), or k finite
    synthesized inputs with one target each, shaped like the pool's."""
    with _checking(strategy, task, options) as it:
        for k in (1, 7, 25):
            unit = it.round_one().unit()  # a selection is always followed by its labeling: a fresh unit per k
            ctx = unit.context(1)
            selection = unit.strategy.select(ctx, k)
            assert isinstance(selection, Selection), f"{it}, k={k}: select() returned a {type(selection).__name__}"
            assert len(selection) == k, f"{it} returned {len(selection)} samples for k={k}"
            unit.training.check(selection, k, f"{it} (k={k})")  # the harness's own contract check
            if selection.indices is not None:
                assert selection.indices.dtype == np.int64, f"{it}, k={k}: indices are {selection.indices.dtype}"
                continue
            shapes = f"inputs {tuple(selection.inputs.shape)} and targets {tuple(selection.targets.shape)}"
            assert selection.inputs.shape == (k, *ctx.pool_x.shape[1:]), \
                f"{it}, k={k}: synthesized {shapes}, unlike the pool's inputs {tuple(ctx.pool_x.shape)}"
            assert selection.targets.shape == (k, *ctx.train_y.shape[1:]), \
                f"{it}, k={k}: synthesized {shapes}, unlike the training set's targets {tuple(ctx.train_y.shape)}"
            bad = int((~torch.isfinite(selection.inputs.float())).sum())
            assert bad == 0, f"{it}, k={k}: {bad} non-finite values in the synthesized inputs"


def is_reproducible_from_its_seed(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """Two units built from the same seed (the second trains round 1 anew) select the same."""
    with _checking(strategy, task, options) as it:
        first, again = it.round_one().unit(), it.round_one().trained()
        a, b = (unit.strategy.select(unit.context(1), 10) for unit in (first, again))
        assert _same(a, b), f"{it}, k=10: two runs with the same seed selected {_show(a)} and {_show(b)}"


def leaves_the_target_model_unchanged(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """Selecting changes neither F's parameters and buffers nor its train/eval mode."""
    with _checking(strategy, task, options) as it:
        unit = it.round_one().unit()
        before = {k: v.clone() for k, v in unit.model.state_dict().items()}
        mode = unit.model.training
        unit.strategy.select(unit.context(1), 10)
        for key, value in unit.model.state_dict().items():
            assert torch.equal(value, before[key]), \
                f"{it}, k=10: selecting changed F's {key} (by up to {float((value - before[key]).abs().max()):g})"
        assert unit.model.training == mode, f"{it}, k=10: F was in training={mode}, selecting left it in {not mode}"


def can_take_the_whole_remaining_pool(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """A pool strategy asked for every unlabeled sample returns exactly those (synthesizing
    strategies pass: they have no pool to exhaust)."""
    with _checking(strategy, task, options) as it:
        probe = it.round_one().unit()
        if probe.strategy.select(probe.context(1), 1).indices is None:
            return
        unit = it.round_one().unit()
        ctx = unit.context(1)
        k = len(ctx.unlabeled)
        picks = unit.strategy.select(ctx, k).indices
        missing, extra = np.setdiff1d(ctx.unlabeled, picks), np.setdiff1d(picks, ctx.unlabeled)
        assert np.array_equal(np.sort(picks), ctx.unlabeled), (
            f"{it}, k={k} (the whole remaining pool): {len(picks)} indices, missing {missing[:8].tolist()}, "
            f"not unlabeled {extra[:8].tolist()}")


def resumes_from_a_checkpoint(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """A unit stopped after round 1 and restored from its checkpoint (through the bytes the
    harness writes) trains and selects exactly as one that never stopped: the strategy's
    ``state_dict`` holds everything it carries between rounds."""
    with _checking(strategy, task, options) as it:
        start = it.round_one()
        straight = start.trained()  # trained anew: it has what the strategy leaves out of its state_dict
        straight.propose(1, 5, initial=False)
        saved = to_bytes(straight.state_dict(1))

        def round_two(u: UnitState) -> tuple[float, Selection]:  # torch's global stream is part of the state
            return u.train_and_evaluate(2)[0].value, u.strategy.select(u.context(2), 5)

        value, a = round_two(straight)
        value_again, b = round_two(start.restored(saved))
        assert value == value_again, f"{it}: round 2 scores {value} straight through, {value_again} after a resume"
        assert _same(a, b), (f"{it}, k=5: selected {_show(a)} straight through, {_show(b)} after a resume "
                             f"(is its state_dict complete?)")


def _bad_values(default: Any) -> list[Any]:
    """Values ``--option`` can give that an option with this default likely refuses."""
    if isinstance(default, bool) or not isinstance(default, (int, float, str)):
        return []
    return ["no-such-value", 1] if isinstance(default, str) else [-1, "not-a-number"]


def refuses_bad_options(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """The harness's planning refuses (ConfigError, before any work) an option no constructor
    parameter takes and a value the constructor rejects; a wrong-typed or negative value the
    constructor accepts must then select (validate options in ``__init__``, not in ``select``)."""
    with _checking(strategy, task, options) as it:
        cls = it.strategy
        plan_run(it.config())  # the options as given are accepted

        def refused(extra: dict[str, Any], what: str) -> None:
            try:
                plan_run(it.config(options={**it.options, **extra}))
            except ConfigError:
                return
            raise AssertionError(f"{it}: the harness's planning accepted {what}")

        for key in ("no_such_option", f"{cls.name}.no_such_option"):
            refused({key: 1}, f"the unknown option {key}=1")
        given = strategy_options(cls, it.options)
        for name, param in inspect.signature(cls).parameters.items():
            for bad in _bad_values(param.default):
                try:
                    cls(**{**given, name: bad})
                except (TypeError, ValueError):
                    refused({f"{cls.name}.{name}": bad}, f"{name}={bad!r}, which its constructor rejects")
                    continue
                unit = it.round_one().unit()
                odd = cls(**{**given, name: bad})
                odd.load_state_dict(unit.strategy.state_dict())  # what it carries from round 1
                try:
                    odd.select(unit.context(1), 5)
                except Exception as err:
                    raise AssertionError(f"{it}: its constructor accepts {name}={bad!r}, but select (k=5) then fails "
                                         f"({type(err).__name__}: {err}); refuse the value in __init__") from err


class _Undeclared(RuntimeError):
    """A strategy used a capability it does not declare in ``requires``."""

    def __init__(self, capability: str, what: str) -> None:
        super().__init__(f"it used {what}, which needs {capability!r} ({describe_capability(capability)})")


@dataclass
class _DeclaredOnly(SelectionContext):
    """A selection context whose scoring raises :class:`_Undeclared` where it needs a built-in
    capability not in ``declared`` (F's own use of its ``embed`` in ``forward`` is not a use)."""

    declared: frozenset[str] = frozenset()

    def _need(self, capability: str, what: str) -> None:
        if capability not in self.declared:
            raise _Undeclared(capability, what)

    @property
    def pool_probabilities(self) -> Tensor:
        self._need(Capability.PROBABILITIES, "context.pool_probabilities")
        return super().pool_probabilities

    def mc_probabilities(self, passes: int, x: Tensor | None = None) -> Tensor:
        self._need(Capability.PROBABILITIES, "context.mc_probabilities")
        return super().mc_probabilities(passes, x)

    def score(self, fn: Callable[[Tensor], Tensor], x: Tensor | None = None, dropout: bool = False) -> Tensor:
        if dropout:
            self._need(Capability.DROPOUT, "F with dropout active (context.mc_probabilities or score)")
        return super().score(fn, x, dropout)

    @property
    def pool_embeddings(self) -> Tensor:
        self._need(Capability.EMBEDDINGS, "context.pool_embeddings")
        return super().pool_embeddings

    def embed(self, x: Tensor) -> Tensor:
        self._need(Capability.EMBEDDINGS, "context.embed")
        return super().embed(x)


def _declared_only(unit: UnitState, declared: frozenset[str]) -> SelectionContext:
    """The unit's context after round 1 offering only the built-in capabilities in ``declared``:
    the task lists no others, scoring that needs them raises, and the generative model and the
    labeler are absent unless declared (as in a run without a strategy that declares them)."""
    ctx = unit.context(1)
    fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}
    fields["task"] = copy.copy(ctx.task)
    fields["task"].capabilities = frozenset(ctx.task.capabilities) & declared
    if Capability.GENERATIVE not in declared:
        fields["generative"] = None
    if Capability.SYNTHETIC_LABELS not in declared:
        def label_inputs(x: Tensor) -> Labels:
            raise _Undeclared(Capability.SYNTHETIC_LABELS, "context.label_inputs")
        fields["label_inputs"] = label_inputs
    return _DeclaredOnly(**fields, declared=declared)


def _without(base: type[Task], capability: str) -> type[Task]:
    """A variant of task class ``base`` that lacks ``capability`` (under a name of its own)."""
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        self.capabilities = frozenset(self.capabilities) - {capability}
    return type(f"{base.__name__}Without", (base,), {"name": f"{base.name}-without-{capability}",
                                                     "__init__": __init__, "__module__": __name__})


def requires_is_honest(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """For each capability in ``requires``, the task without it is refused by the strategy
    (``refuses``) and by the harness's planning (ConfigError); and the strategy selects with only
    what it declares (the other built-in capabilities withheld: F's embeddings, its class
    probabilities, dropout, the generative model, the labeler of synthetic inputs)."""
    with _checking(strategy, task, options) as it:
        cls = it.strategy
        plan_run(it.config())
        for capability in sorted(cls.requires):
            variant = _without(TASKS.get(it.task), capability)
            with registered(variant):
                assert cls.refuses(create_task(variant.name)) is not None, \
                    f"{it}: requires {capability!r}, yet its refuses() accepts {variant.name!r}, which lacks it"
                try:
                    plan_run(it.config(task=variant.name))
                except ConfigError:
                    continue
                raise AssertionError(f"{it}: requires {capability!r}, yet the harness's planning accepts "
                                     f"task {variant.name!r}, which lacks it")
        unit = it.round_one().unit()
        try:
            unit.strategy.select(_declared_only(unit, frozenset(cls.requires)), 5)
        except _Undeclared as err:
            raise AssertionError(f"{it}, k=5: {err}; its requires declares only {sorted(cls.requires)}") from None
        except Exception as err:
            raise AssertionError(f"{it}, k=5: selecting with only the declared capabilities {sorted(cls.requires)} "
                                 f"failed ({type(err).__name__}: {err}); does it use one it does not declare?") from err


def state_dict_round_trips(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """After a round with a selection, a fresh instance given ``load_state_dict(state_dict())``,
    directly and through a checkpoint's bytes (``torch.load(weights_only=True)``), selects as the
    original does."""
    with _checking(strategy, task, options) as it:
        start = it.round_one()
        unit = start.unit()
        unit.propose(1, 5, initial=False)
        unit.train_and_evaluate(2)
        state = unit.strategy.state_dict()
        through_bytes = _loaded(to_bytes(state), str(it))
        copies = {"load_state_dict(state_dict())": copy.deepcopy(state),
                  "it through to_bytes/from_bytes": through_bytes}
        rng, torch_rng = unit.rng.bit_generator.state, torch.get_rng_state()
        a = unit.strategy.select(unit.context(2), 7)
        for how, saved in copies.items():
            fresh = start.run.plan.make_strategy(it.strategy)
            fresh.load_state_dict({k: v.to(unit.plan.device) if isinstance(v, Tensor) else v for k, v in saved.items()})
            unit.rng.bit_generator.state = rng
            torch.set_rng_state(torch_rng)
            b = fresh.select(unit.context(2), 7)
            assert _same(a, b), (f"{it}, k=7: the original selected {_show(a)}, a fresh instance given {how} "
                                 f"{_show(b)} (its state_dict has {sorted(state) or 'nothing'})")


StrategyCheck = Callable[..., None]
#: Every strategy check by name: ``check(strategy, task=None, options=None)``; parametrize a test over them.
STRATEGY_CHECKS: dict[str, StrategyCheck] = {check.__name__: check for check in (
    returns_k_samples_the_harness_accepts, is_reproducible_from_its_seed, leaves_the_target_model_unchanged,
    can_take_the_whole_remaining_pool, resumes_from_a_checkpoint, refuses_bad_options, requires_is_honest,
    state_dict_round_trips)}


def check_strategy(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """Run every strategy check on ``strategy`` (a registered name or a Strategy class) with
    ``options``, on ``task`` (a registered name or a Task class; default :class:`Blobs`), all from
    one round-1 state. An AssertionError names the strategy, the task and what broke."""
    for check in STRATEGY_CHECKS.values():
        check(strategy, task, options)


TaskOrInstance = str | type[Task] | Task


def _task_and_data(task: TaskOrInstance) -> tuple[Task, TaskData]:
    """The task (given the harness's cache folder) and its data from :func:`data_root`, loaded
    once (a cached instance stays alive, so no other object takes its id)."""
    def load() -> tuple[Task, TaskData]:
        made = create_task(task) if isinstance(task, str) else task() if isinstance(task, type) else task
        if made.cache_dir is None:
            made.cache_dir = cache_root()
        return made, made.load(data_root(), download=False)

    which = (task, _factory(task)) if isinstance(task, str) else task if isinstance(task, type) else id(task)
    return _cached(("task", which, data_root()), load)


def declares_what_the_harness_needs(task: TaskOrInstance) -> None:
    """A registered name, a description, a metric with a label, and a protocol whose sizes
    fit its pool and whose optimizer builds (check on the pool as loaded)."""
    made, data = _task_and_data(task)
    it = f"task {made.name!r}"
    assert made.name and made.description, f"{it}: a task needs a name and a description ({made.description!r})"
    assert made.metric.name and made.metric.label, f"{it}: its metric needs a name and a label ({made.metric})"
    check_protocol(made.protocol, len(data.pool_x), f"the {made.name} pool")
    if Capability.GENERATIVE in made.capabilities:
        assert made.generative is not None, f"{it} has Capability.GENERATIVE but declares no `generative` spec"


def loads_tensors_with_matching_targets(task: TaskOrInstance) -> None:
    """Pool and test sets: float tensors (or uint8 images [N, C, H, W]) of one shape per sample,
    a target per sample, more pool than test samples; class targets within the model's classes."""
    made, data = _task_and_data(task)
    it = f"task {made.name!r}"
    assert isinstance(data, TaskData), f"{it}: load() returned a {type(data).__name__}, not TaskData"
    pool, test = data.pool_x, data.test_x
    assert pool.dtype == test.dtype, f"{it}: pool inputs are {pool.dtype}, test inputs {test.dtype}"
    assert pool.dtype == torch.float32 or (pool.dtype == torch.uint8 and pool.ndim == 4), \
        f"{it}: inputs are {pool.dtype} {tuple(pool.shape)}; use float32 tensors or uint8 images [N, C, H, W]"
    assert len(pool) > len(test) > 0, \
        f"{it}: {len(pool)} pool and {len(test)} test samples; the pool must be larger than the (non-empty) test set"
    assert pool.shape[1:] == test.shape[1:], \
        f"{it}: pool samples are shaped {tuple(pool.shape[1:])}, test samples {tuple(test.shape[1:])}"
    check_labels(made, data)  # the harness's own check at load (raises DataError naming the sample)


def model_loss_scores_and_embeddings_fit(task: TaskOrInstance) -> None:
    """F maps a batch to outputs the loss takes (a finite scalar that back-propagates) and the
    scores rate (headline metric first, then :meth:`Task.extra_metrics`); ``embed`` gives
    [B, d]; a classifier gives [B, C] logits; a task with Capability.DROPOUT has dropout in F."""
    made, data = _task_and_data(task)
    it = f"task {made.name!r}"
    torch.manual_seed(0)
    model = made.make_model()
    x, y = data.pool_x[:8], data.pool_y[:8]
    output = model(x)
    loss = made.loss(output, y)
    assert loss.ndim == 0 and torch.isfinite(loss), \
        f"{it}: the loss is {loss.detach()}; it must be a finite scalar (a batch mean)"
    loss.backward()
    scores = made.scores(output.detach(), y)
    assert list(scores)[:1] == [made.metric.name], f"{it}: scores() returned {list(scores)}, not {made.metric.name!r} first"
    assert list(scores)[1:] == made.extra_metrics(), \
        f"{it}: scores() returned {list(scores)[1:]} after the headline, extra_metrics() says {made.extra_metrics()}"
    embedding = model.embed(x)
    assert embedding.shape[0] == 8 and embedding.flatten(1).shape[1] > 0, \
        f"{it}: embed(x) of 8 samples gave {tuple(embedding.shape)}; it must give [B, d]"
    if Capability.PROBABILITIES in made.capabilities:
        assert output.ndim == 2 and output.shape[1] > 1, \
            f"{it}: a classifier's outputs are logits [B, C], got {tuple(output.shape)}"
    if Capability.DROPOUT in made.capabilities:
        assert any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()), \
            f"{it} has Capability.DROPOUT, but F has no dropout layer"


def augments_reproducibly(task: TaskOrInstance) -> None:
    """A task that offers augmentation keeps shape, dtype and device, and draws only from the
    generator it is given (tasks without augmentation pass: there is nothing to check)."""
    made, data = _task_and_data(task)
    if made.augmentation is None:
        return
    it = f"task {made.name!r}"
    x = data.pool_x[:16]
    first, again, other = (made.augment(x, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert (first.shape, first.dtype, first.device) == (x.shape, x.dtype, x.device), \
        f"{it}: augment() turned {(tuple(x.shape), x.dtype, x.device)} into " \
        f"{(tuple(first.shape), first.dtype, first.device)}"
    assert torch.equal(first, again), f"{it}: the same generator seed augmented differently"
    assert not torch.equal(first, other), f"{it}: different generator seeds augmented identically"


def labels_synthetic_inputs(task: TaskOrInstance) -> None:
    """A task with Capability.SYNTHETIC_LABELS labels inputs shaped like its pool: one target
    per input shaped like the pool's targets, and an ``ok`` flag per input (others pass)."""
    made, data = _task_and_data(task)
    if Capability.SYNTHETIC_LABELS not in made.capabilities:
        return
    it = f"task {made.name!r}"
    x = data.pool_x[:4].float()
    labels = made.label_inputs(x)
    assert isinstance(labels, Labels), f"{it}: label_inputs() returned a {type(labels).__name__}, not Labels"
    assert len(labels.ok) == 4 and labels.inputs.shape == x.shape, \
        f"{it}: labeling 4 inputs {tuple(x.shape)} gave {len(labels.ok)} ok flags and inputs {tuple(labels.inputs.shape)}"
    assert labels.targets.shape == (4, *data.pool_y.shape[1:]), \
        f"{it}: targets {tuple(labels.targets.shape)}, the pool's are {(4, *data.pool_y.shape[1:])}"
    assert labels.ok.any(), f"{it}: the labeler refused every real pool sample ({labels.errors})"


TaskCheck = Callable[[TaskOrInstance], None]
#: Every task check by name: ``check(task)`` with a registered name, a Task class or an instance.
TASK_CHECKS: dict[str, TaskCheck] = {check.__name__: check for check in (
    declares_what_the_harness_needs, loads_tensors_with_matching_targets, model_loss_scores_and_embeddings_fit,
    augments_reproducibly, labels_synthetic_inputs)}


def check_task(task: TaskOrInstance) -> None:
    """Run every task check on ``task`` (a registered name, a Task class, or an instance, e.g. a
    smaller configuration of it), then, for a name or a class, two rounds of ``random`` on it
    through the harness."""
    for check in TASK_CHECKS.values():
        check(task)
    if not isinstance(task, Task):
        returns_k_samples_the_harness_accepts("random", task)


__all__ = ["Blobs", "DropoutMLP", "STRATEGY_CHECKS", "TASK_CHECKS", "check_strategy", "check_task", "data_root",
           "registered", "trained_context", *STRATEGY_CHECKS, *TASK_CHECKS]
