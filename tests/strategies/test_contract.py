"""The contract every registered strategy must meet (after scikit-activeml's template tests).

Each strategy runs two rounds on the in-memory ``blobs`` task the way the harness runs it
(``initial``, train, ``select``). It returns exactly k samples that the harness accepts: new,
distinct, unlabeled pool indices, or k synthesized inputs with one target each. It is
reproducible from its seed and leaves the target model unchanged.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from bench.generative import train_vae
from bench.loop import TrainingSet, initial_weights
from bench.training import train_epochs
from labelers.lookup import LookupLabeler
from strategies import STRATEGIES, list_strategies
from strategies.base import Selection, SelectionContext
from tests.conftest import Blobs

INITIAL = 30


@functools.lru_cache(maxsize=None)
def trained_vae(task_cls: type):
    """The task's VAE, trained once per test session."""
    task = task_cls()
    return train_vae(task.load(None).pool_x, task.generative, seed=0, progress=False)[0]


def make_context(task, seed: int = 0, n_labeled: int = INITIAL) -> SelectionContext:
    """A context after one round of training on ``n_labeled`` random pool samples."""
    return two_rounds(task, "random", 0, seed, n_labeled)[0]


def two_rounds(task, name: str, k: int, seed: int = 0, n_labeled: int = INITIAL):
    """Run ``name``'s initial round and one selection of ``k`` as the harness does; returns the
    context of the selection, the training set before it, and the selection."""
    data = task.load(None)
    strategy = STRATEGIES.create(name)
    model = task.make_model()
    model.load_state_dict(initial_weights(task, 0))
    rng = np.random.default_rng(seed)
    training = TrainingSet(data, LookupLabeler(data.pool_y))

    def context() -> SelectionContext:
        empty = len(training) == 0
        return SelectionContext(
            task=task, model=model, pool_x=data.pool_x, labeled=training.pool_indices,
            train_x=data.pool_x[:0] if empty else training.x, train_y=data.pool_y[:0] if empty else training.y,
            rng=rng, round=1, batch_size=64, generative=trained_vae(type(task)), label_inputs=task.label_inputs,
        )

    first = strategy.initial(context(), n_labeled)
    if first is None:
        first = Selection(indices=np.random.default_rng(0).choice(len(data.pool_x), n_labeled, replace=False))
    training.check(first, n_labeled, name)
    training.add(first)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_epochs(model, optimizer, task.loss, training.x, training.y, 3, 16, torch.Generator().manual_seed(0))
    ctx = context()
    return ctx, training, strategy.select(ctx, k) if k else None


def applicable(name: str) -> bool:
    return not STRATEGIES.get(name).missing(Blobs())


STRATEGY_NAMES = [pytest.param(n, marks=pytest.mark.skipif(not applicable(n), reason=f"{n} does not apply to blobs"))
                  for n in list_strategies()]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize("k", [1, 7, 25])
def test_returns_exactly_k_samples_the_harness_accepts(name, k):
    ctx, training, selection = two_rounds(Blobs(), name, k)
    assert isinstance(selection, Selection) and len(selection) == k
    training.check(selection, k, name)  # the harness's own contract check
    if selection.indices is not None:
        idx = selection.indices
        assert idx.dtype == np.int64 and len(np.unique(idx)) == k
        assert not np.isin(idx, ctx.labeled).any()
    else:
        assert selection.inputs.shape == (k, *ctx.pool_x.shape[1:])
        assert selection.targets.shape == (k, *ctx.train_y.shape[1:])
        assert torch.isfinite(selection.inputs).all()


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_is_reproducible_from_its_seed(name):
    first = two_rounds(Blobs(), name, 10, seed=3)[2]
    again = two_rounds(Blobs(), name, 10, seed=3)[2]
    if first.indices is not None:
        np.testing.assert_array_equal(first.indices, again.indices)
    else:
        assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_leaves_the_target_model_unchanged(name):
    ctx, _, _ = two_rounds(Blobs(), name, 0)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    strategy = STRATEGIES.create(name)
    strategy.initial(ctx, INITIAL)
    strategy.select(ctx, 10)
    for key, value in ctx.model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_pool_strategies_can_take_the_whole_remaining_pool(name):
    ctx, _, probe = two_rounds(Blobs(), name, 1)
    if probe.indices is None:
        pytest.skip(f"{name} synthesizes its samples")
    remaining = len(ctx.pool_x) - len(ctx.labeled)
    idx = two_rounds(Blobs(), name, remaining)[2].indices
    np.testing.assert_array_equal(np.sort(idx), ctx.unlabeled)
