"""The task checks: each takes a task (a registered name, a class or an instance) and checks it on
its data from :func:`~bench.testing.data_root`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.paths import cache_root
from bench.run.config import check_protocol
from bench.run.plan import check_labels, create_task
from bench.testing.harness import _cached, _factory, data_root
from bench.testing.strategy_checks import returns_k_samples_the_harness_accepts
from tasks.base import Capability, Labels, Task, TaskData

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
    assert pool.dtype == torch.float32 or (pool.dtype == torch.uint8 and pool.ndim == 4), (
        f"{it}: inputs are {pool.dtype} {tuple(pool.shape)}; use float32 tensors or uint8 images [N, C, H, W]"
    )
    assert len(pool) > len(test) > 0, (
        f"{it}: {len(pool)} pool and {len(test)} test samples; the pool must be larger than the (non-empty) test set"
    )
    assert pool.shape[1:] == test.shape[1:], (
        f"{it}: pool samples are shaped {tuple(pool.shape[1:])}, test samples {tuple(test.shape[1:])}"
    )
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
    assert loss.ndim == 0 and torch.isfinite(loss), (
        f"{it}: the loss is {loss.detach()}; it must be a finite scalar (a batch mean)"
    )
    loss.backward()
    scores = made.scores(output.detach(), y)
    assert list(scores)[:1] == [made.metric.name], (
        f"{it}: scores() returned {list(scores)}, not {made.metric.name!r} first"
    )
    assert list(scores)[1:] == made.extra_metrics(), (
        f"{it}: scores() returned {list(scores)[1:]} after the headline, extra_metrics() says {made.extra_metrics()}"
    )
    embedding = model.embed(x)
    assert embedding.shape[0] == 8 and embedding.flatten(1).shape[1] > 0, (
        f"{it}: embed(x) of 8 samples gave {tuple(embedding.shape)}; it must give [B, d]"
    )
    if Capability.PROBABILITIES in made.capabilities:
        assert output.ndim == 2 and output.shape[1] > 1, (
            f"{it}: a classifier's outputs are logits [B, C], got {tuple(output.shape)}"
        )
    if Capability.DROPOUT in made.capabilities:
        assert any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()), (
            f"{it} has Capability.DROPOUT, but F has no dropout layer"
        )


def augments_reproducibly(task: TaskOrInstance) -> None:
    """A task that offers augmentation keeps shape, dtype and device, and draws only from the
    generator it is given (tasks without augmentation pass: there is nothing to check)."""
    made, data = _task_and_data(task)
    if made.augmentation is None:
        return
    it = f"task {made.name!r}"
    x = data.pool_x[:16]
    first, again, other = (made.augment(x, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert (first.shape, first.dtype, first.device) == (x.shape, x.dtype, x.device), (
        f"{it}: augment() turned {(tuple(x.shape), x.dtype, x.device)} into "
        f"{(tuple(first.shape), first.dtype, first.device)}"
    )
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
    assert len(labels.ok) == 4 and labels.inputs.shape == x.shape, (
        f"{it}: labeling 4 inputs {tuple(x.shape)} gave {len(labels.ok)} ok flags and inputs "
        f"{tuple(labels.inputs.shape)}"
    )
    assert labels.targets.shape == (4, *data.pool_y.shape[1:]), (
        f"{it}: targets {tuple(labels.targets.shape)}, the pool's are {(4, *data.pool_y.shape[1:])}"
    )
    assert labels.ok.any(), f"{it}: the labeler refused every real pool sample ({labels.errors})"


TaskCheck = Callable[[TaskOrInstance], None]
#: Every task check by name: ``check(task)`` with a registered name, a Task class or an instance.
TASK_CHECKS: dict[str, TaskCheck] = {
    check.__name__: check
    for check in (
        declares_what_the_harness_needs,
        loads_tensors_with_matching_targets,
        model_loss_scores_and_embeddings_fit,
        augments_reproducibly,
        labels_synthetic_inputs,
    )
}


def check_task(task: TaskOrInstance) -> None:
    """Run every task check on ``task`` (a registered name, a Task class, or an instance, e.g. a
    smaller configuration of it), then, for a name or a class, two rounds of ``random`` on it
    through the harness."""
    for check in TASK_CHECKS.values():
        check(task)
    if not isinstance(task, Task):
        returns_k_samples_the_harness_accepts("random", task)
