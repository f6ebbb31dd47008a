"""The contract every registered strategy must meet (after scikit-activeml's template tests).

Each strategy is exercised on the in-memory ``blobs`` task, when it applies to it: it returns
exactly k samples, never re-picks labeled points or repeats one, is reproducible from its seed,
and leaves the target model unchanged.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from bench.generative import train_vae
from bench.loop import initial_weights
from bench.training import train_epochs
from strategies import STRATEGIES, list_strategies
from strategies.base import Selection, SelectionContext
from tests.conftest import Blobs


@functools.lru_cache(maxsize=None)
def trained_vae(task_cls: type):
    """The task's VAE, trained once per test session."""
    task = task_cls()
    return train_vae(task.load(None).pool_x, task.generative, seed=0, progress=False)[0]


def make_context(task, seed: int = 0, n_labeled: int = 30) -> SelectionContext:
    data = task.load(None)
    model = task.make_model()
    model.load_state_dict(initial_weights(task, 0))
    labeled = np.random.default_rng(0).choice(len(data.pool_x), n_labeled, replace=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_epochs(model, optimizer, task.loss, data.pool_x[labeled], data.pool_y[labeled], 3, 16,
                 torch.Generator().manual_seed(0))
    return SelectionContext(
        task=task, model=model, pool_x=data.pool_x, labeled=labeled,
        train_x=data.pool_x[labeled], train_y=data.pool_y[labeled],
        rng=np.random.default_rng(seed), round=1, batch_size=64,
        generative=trained_vae(type(task)) if task.generative else None,
    )


def applicable(name: str) -> bool:
    return not STRATEGIES.get(name).missing(Blobs())


STRATEGY_NAMES = [pytest.param(n, marks=pytest.mark.skipif(not applicable(n), reason=f"{n} does not apply to blobs"))
                  for n in list_strategies()]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize("k", [1, 7, 25])
def test_returns_exactly_k_new_distinct_pool_indices(name, k):
    ctx = make_context(Blobs())
    selection = STRATEGIES.create(name).select(ctx, k)
    assert isinstance(selection, Selection) and selection.indices is not None
    idx = selection.indices
    assert idx.dtype == np.int64 and idx.shape == (k,)
    assert len(np.unique(idx)) == k
    assert ((idx >= 0) & (idx < len(ctx.pool_x))).all()
    assert not np.isin(idx, ctx.labeled).any()


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_is_reproducible_from_its_seed(name):
    first = STRATEGIES.create(name).select(make_context(Blobs(), seed=3), 10).indices
    again = STRATEGIES.create(name).select(make_context(Blobs(), seed=3), 10).indices
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_leaves_the_target_model_unchanged(name):
    ctx = make_context(Blobs())
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    STRATEGIES.create(name).select(ctx, 10)
    for key, value in ctx.model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_can_take_the_whole_remaining_pool(name):
    ctx = make_context(Blobs())
    remaining = len(ctx.pool_x) - len(ctx.labeled)
    idx = STRATEGIES.create(name).select(ctx, remaining).indices
    np.testing.assert_array_equal(np.sort(idx), ctx.unlabeled)
