"""The contract every strategy and task must meet, shipped so that a plug-in's own tests run it.

After scikit-activeml's template suites. Each check drives the harness's own code (the plan, the
unit of work, the selection context), so a plug-in that passes runs in ``python -m bench run``::

    from bench.testing import STRATEGY_CHECKS, check_task

    @pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
    def test_bald_meets_the_strategy_contract(check):
        check("bald")                    # on the built-in synthetic task (it has dropout)
        check("bald", task="digits")     # on your own registered task

    def test_digits_meets_the_task_contract():
        check_task("digits")

``check_strategy(name, task)`` and ``check_task(name)`` run every check at once. Tasks read
their data from ``data_root`` (default: ``$BENCH_DATA``, as ``run`` does); missing data is an
error, never a silent skip. Strategy checks without a ``task`` use :class:`Blobs`, a synthetic
task with every built-in capability that trains in milliseconds (``with registered(Blobs):``
registers it for a block, as the checks do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.paths import cache_root, default_data_root
from bench.run.assembly import assemble
from bench.run.checkpoint import from_bytes, to_bytes
from bench.run.config import RunConfig, check_protocol
from bench.run.loop import UnitState
from bench.run.plan import Plan, check_labels, create_task
from bench.testing_blobs import Blobs, DropoutMLP
from strategies import STRATEGIES
from strategies.base import Selection, SelectionContext, Strategy
from tasks import TASKS
from tasks.base import Capability, Labels, Task, TaskData

INITIAL = 30  # labeled samples before the checked selection
SUBSET = 400  # pool samples the checks use from a larger task


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


@contextmanager
def _task_registered(task: str | None) -> Iterator[str]:
    """The name of the task to check on; :class:`Blobs`, registered for the block, when None."""
    if task is not None:
        yield task
        return
    with registered(Blobs):
        yield Blobs.name


def _plan(strategy: str, task: str, seed: int = 0) -> tuple[Plan, TaskData, object]:
    """A validated two-round plan of ``strategy`` on ``task`` (a subset of a large pool), its
    data and the generative model the strategy needs (None if none), as ``run`` builds them."""
    made = create_task(task)
    subset = SUBSET if (made.pool_size or 0) > SUBSET else None
    config = RunConfig(task=task, strategies=[strategy], rounds=2, initial=INITIAL, increment=1, epochs=2,
                       seed=seed, device="cpu", score_dtype="float32", subset=subset, data_root=data_root(),
                       download=False, quiet=True)
    built = assemble(config)
    return built.plan, built.data, built.generative


def _after_round_one(strategy: str, task: str, seed: int = 0) -> UnitState:
    """A unit that took its initial set and trained round 1, as the harness runs it."""
    plan, data, generative = _plan(strategy, task, seed)
    unit = UnitState(plan, data, plan.strategies[0], repeat=0, generative=generative)
    unit.propose(0, INITIAL, initial=True)
    unit.train_and_evaluate(1)
    return unit


def trained_context(task: str | None = None, seed: int = 0) -> SelectionContext:
    """The selection context after round 1 of ``random`` on ``task`` (default :class:`Blobs`):
    F trained on INITIAL random pool samples, as a strategy sees it (for a plug-in's own tests)."""
    with _task_registered(task) as name:
        return _after_round_one("random", name, seed).context(1)


def _same(a: Selection, b: Selection) -> bool:
    if a.indices is not None:
        return b.indices is not None and np.array_equal(a.indices, b.indices)
    return b.inputs is not None and torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def returns_k_samples_the_harness_accepts(strategy: str, task: str | None = None) -> None:
    """For k = 1, 7, 25: exactly k new, distinct, unlabeled pool indices (int64), or k finite
    synthesized inputs with one target each, shaped like the pool's."""
    with _task_registered(task) as name:
        for k in (1, 7, 25):
            unit = _after_round_one(strategy, name)  # a selection is always followed by its labeling
            ctx = unit.context(1)
            selection = unit.strategy.select(ctx, k)
            assert isinstance(selection, Selection) and len(selection) == k, f"{strategy} returned {len(selection)} of {k}"
            unit.training.check(selection, k, f"strategy {strategy!r}")  # the harness's own contract check
            if selection.indices is not None:
                assert selection.indices.dtype == np.int64
            else:
                assert selection.inputs.shape == (k, *ctx.pool_x.shape[1:]), "synthesized inputs shaped unlike the pool"
                assert selection.targets.shape == (k, *ctx.train_y.shape[1:]), "targets shaped unlike the training set's"
                assert torch.isfinite(selection.inputs.float()).all(), "non-finite synthesized inputs"


def is_reproducible_from_its_seed(strategy: str, task: str | None = None) -> None:
    """The same seed gives the same selection; the selection depends on the strategy's rng."""
    with _task_registered(task) as name:
        first, again = (_after_round_one(strategy, name, seed=3) for _ in range(2))
        a, b = (unit.strategy.select(unit.context(1), 10) for unit in (first, again))
        assert _same(a, b), f"{strategy}: two runs with the same seed selected differently"


def leaves_the_target_model_unchanged(strategy: str, task: str | None = None) -> None:
    """Selecting changes neither F's parameters and buffers nor its train/eval mode."""
    with _task_registered(task) as name:
        unit = _after_round_one(strategy, name)
        before = {k: v.clone() for k, v in unit.model.state_dict().items()}
        mode = unit.model.training
        unit.strategy.select(unit.context(1), 10)
        for key, value in unit.model.state_dict().items():
            assert torch.equal(value, before[key]), f"{strategy} changed F's {key}"
        assert unit.model.training == mode, f"{strategy} left F in another train/eval mode"


def can_take_the_whole_remaining_pool(strategy: str, task: str | None = None) -> None:
    """A pool strategy asked for every unlabeled sample returns exactly those (synthesizing
    strategies pass: they have no pool to exhaust)."""
    with _task_registered(task) as name:
        probe = _after_round_one(strategy, name)
        if probe.strategy.select(probe.context(1), 1).indices is None:
            return
        unit = _after_round_one(strategy, name)
        ctx = unit.context(1)
        picks = unit.strategy.select(ctx, len(ctx.unlabeled)).indices
        assert np.array_equal(np.sort(picks), ctx.unlabeled), f"{strategy} did not return the whole remaining pool"


def resumes_from_a_checkpoint(strategy: str, task: str | None = None) -> None:
    """A unit stopped after round 1 and restored from its checkpoint (through the bytes the
    harness writes) trains and selects exactly as one that never stopped: the strategy's
    ``state_dict`` holds everything it carries between rounds."""
    with _task_registered(task) as name:
        plan, data, generative = _plan(strategy, name)

        def unit() -> UnitState:
            return UnitState(plan, data, plan.strategies[0], repeat=0, generative=generative)

        straight = unit()
        straight.propose(0, INITIAL, initial=True)
        straight.train_and_evaluate(1)
        straight.propose(1, 5, initial=False)
        saved = to_bytes(straight.state_dict(1))

        def round_two(u: UnitState) -> tuple[float, Selection]:  # torch's global stream is part of the state
            return u.train_and_evaluate(2)[0].value, u.strategy.select(u.context(2), 5)

        value, a = round_two(straight)
        resumed = unit()
        resumed.load_state_dict(from_bytes(saved))
        value_again, b = round_two(resumed)
        assert value == value_again, f"{strategy}: round 2 differs after a resume"
        assert _same(a, b), f"{strategy}: the selection after a resume differs (is its state_dict complete?)"


StrategyCheck = Callable[..., None]
#: Every strategy check by name: ``check(strategy, task=None)``; parametrize a test over them.
STRATEGY_CHECKS: dict[str, StrategyCheck] = {check.__name__: check for check in (
    returns_k_samples_the_harness_accepts, is_reproducible_from_its_seed, leaves_the_target_model_unchanged,
    can_take_the_whole_remaining_pool, resumes_from_a_checkpoint)}


def check_strategy(strategy: str, task: str | None = None) -> None:
    """Run every strategy check on ``strategy`` (a registered name), on ``task`` (a registered
    name; default :class:`Blobs`); an AssertionError names what broke."""
    for check in STRATEGY_CHECKS.values():
        check(strategy, task)


_LOADED: dict[tuple[int | str, Path], tuple[Task, TaskData]] = {}  # loaded once per task and data root


def _task_and_data(task: str | Task) -> tuple[Task, TaskData]:
    """The task (given the harness's cache folder) and its data from :func:`data_root`."""
    key = (task if isinstance(task, str) else id(task), data_root())
    if key not in _LOADED:
        made = create_task(task) if isinstance(task, str) else task
        if made.cache_dir is None:
            made.cache_dir = cache_root()
        _LOADED[key] = made, made.load(data_root(), download=False)
    return _LOADED[key]


def declares_what_the_harness_needs(task: str | Task) -> None:
    """A registered name, a description, a metric with a label, and a protocol whose sizes
    fit its pool and whose optimizer builds (check on the pool as loaded)."""
    made, data = _task_and_data(task)
    assert made.name and made.description, "a task needs a name and a description"
    assert made.metric.name and made.metric.label, "a task's metric needs a name and a label"
    check_protocol(made.protocol, len(data.pool_x), f"the {made.name} pool")
    if Capability.GENERATIVE in made.capabilities:
        assert made.generative is not None, "a task with Capability.GENERATIVE declares its `generative` spec"


def loads_tensors_with_matching_targets(task: str | Task) -> None:
    """Pool and test sets: float tensors (or uint8 images [N, C, H, W]) of one shape per sample,
    a target per sample, more pool than test samples; class targets within the model's classes."""
    made, data = _task_and_data(task)
    assert isinstance(data, TaskData)
    assert data.pool_x.dtype == data.test_x.dtype, "pool and test inputs have different dtypes"
    assert data.pool_x.dtype == torch.float32 or (data.pool_x.dtype == torch.uint8 and data.pool_x.ndim == 4), \
        "inputs must be float32 tensors or uint8 images [N, C, H, W]"
    assert len(data.pool_x) > len(data.test_x) > 0, "the pool must be larger than the (non-empty) test set"
    assert data.pool_x.shape[1:] == data.test_x.shape[1:], "pool and test samples are shaped differently"
    check_labels(made, data)  # the harness's own check at load (raises DataError naming the sample)


def model_loss_scores_and_embeddings_fit(task: str | Task) -> None:
    """F maps a batch to outputs the loss takes (a finite scalar that back-propagates) and the
    scores rate (headline metric first, then :meth:`Task.extra_metrics`); ``embed`` gives
    [B, d]; a classifier gives [B, C] logits; a task with Capability.DROPOUT has dropout in F."""
    made, data = _task_and_data(task)
    torch.manual_seed(0)
    model = made.make_model()
    x, y = data.pool_x[:8], data.pool_y[:8]
    output = model(x)
    loss = made.loss(output, y)
    assert loss.ndim == 0 and torch.isfinite(loss), "the loss must be a finite scalar (a batch mean)"
    loss.backward()
    scores = made.scores(output.detach(), y)
    assert list(scores)[0] == made.metric.name, f"scores() must return {made.metric.name!r} first"
    assert list(scores)[1:] == made.extra_metrics(), "scores() beyond the headline must match extra_metrics()"
    embedding = model.embed(x)
    assert embedding.shape[0] == 8 and embedding.flatten(1).shape[1] > 0, "embed(x) must give [B, d]"
    if Capability.PROBABILITIES in made.capabilities:
        assert output.ndim == 2 and output.shape[1] > 1, "a classifier's outputs are logits [B, C]"
    if Capability.DROPOUT in made.capabilities:
        assert any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()), \
            "Capability.DROPOUT: F has no dropout layer"


def augments_reproducibly(task: str | Task) -> None:
    """A task that offers augmentation keeps shape, dtype and device, and draws only from the
    generator it is given (tasks without augmentation pass: there is nothing to check)."""
    made, data = _task_and_data(task)
    if made.augmentation is None:
        return
    x = data.pool_x[:16]
    first, again, other = (made.augment(x, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert first.shape == x.shape and first.dtype == x.dtype and first.device == x.device
    assert torch.equal(first, again), "the same generator seed augmented differently"
    assert not torch.equal(first, other), "different generator seeds augmented identically"


def labels_synthetic_inputs(task: str | Task) -> None:
    """A task with Capability.SYNTHETIC_LABELS labels inputs shaped like its pool: one target
    per input shaped like the pool's targets, and an ``ok`` flag per input (others pass)."""
    made, data = _task_and_data(task)
    if Capability.SYNTHETIC_LABELS not in made.capabilities:
        return
    x = data.pool_x[:4].float()
    labels = made.label_inputs(x)
    assert isinstance(labels, Labels) and len(labels.ok) == 4 and labels.inputs.shape == x.shape
    assert labels.targets.shape == (4, *data.pool_y.shape[1:]), "targets shaped unlike the pool's"
    assert labels.ok.any(), "the labeler refused every real pool sample"


TaskCheck = Callable[[str | Task], None]
#: Every task check by name: ``check(task)`` with a registered name or a Task instance.
TASK_CHECKS: dict[str, TaskCheck] = {check.__name__: check for check in (
    declares_what_the_harness_needs, loads_tensors_with_matching_targets, model_loss_scores_and_embeddings_fit,
    augments_reproducibly, labels_synthetic_inputs)}


def check_task(task: str | Task) -> None:
    """Run every task check on ``task`` (a registered name, or an instance, e.g. a smaller
    configuration of it), then two rounds of ``random`` on it through the harness (by name)."""
    for check in TASK_CHECKS.values():
        check(task)
    if isinstance(task, str):
        returns_k_samples_the_harness_accepts("random", task)


__all__ = ["Blobs", "DropoutMLP", "STRATEGY_CHECKS", "TASK_CHECKS", "check_strategy", "check_task", "data_root",
           "registered", "trained_context", *STRATEGY_CHECKS, *TASK_CHECKS]
