"""SNN: the nearest unlabeled pool sample to the stepped point, re-selection off the manifold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch import nn

from bench.run.loop import selection_context
from strategies.base import SelectionContext
from strategies.snn import PoolCodes, SamplingByNearestNeighbour
from tasks.base import Capability, Metric, Protocol, Task


class Identity(nn.Module):
    """A 'VAE' whose latent space is the input space: E(x) = x, G(z) = z."""

    def encode(self, x):
        return x

    def decode(self, z):
        return z


class PushRight(nn.Module):
    """Logits (x0, 0) with target class 1: the loss log(1 + e^x0) grows along +x0."""

    def forward(self, x):
        return torch.stack([x[:, 0], torch.zeros(len(x))], dim=1)


class Grid(Task):
    name = "grid"
    description = "a 10 x 10 grid of 2-D points (tests only)"
    metric = Metric("accuracy", True, "accuracy")
    protocol = Protocol(1, 1, 1, 1, 1, 1.0)
    capabilities = frozenset({Capability.GENERATIVE})

    def load(self, data_root, download=True):
        raise NotImplementedError

    def make_model(self):
        return PushRight()

    def loss(self, output, target):
        return nnf.cross_entropy(output, target)

    def scores(self, output, target):
        return {"accuracy": 0.0}


POOL = torch.tensor([[float(i), float(j)] for i in range(10) for j in range(10)])


def index_of(x: float, y: float) -> int:
    return int(x) * 10 + int(y)


def grid_context(labeled: list[int], seed: int = 0) -> SelectionContext:
    labeled = np.asarray(labeled, dtype=np.int64)
    return selection_context(
        Grid(),
        PushRight(),
        POOL,
        labeled,
        POOL[labeled],
        torch.ones(len(labeled), dtype=torch.long),
        np.random.default_rng(seed),
        1,
        generative=Identity(),
    )


def test_takes_the_pool_sample_nearest_to_the_stepped_point():
    selection = SamplingByNearestNeighbour(alpha=3.0).select(grid_context([index_of(2, 5)]), 1)
    assert selection.indices.tolist() == [index_of(5, 5)]


def test_skips_labeled_samples_and_samples_chosen_earlier_in_the_round():
    labeled = [index_of(2, 5), index_of(5, 5)]
    ctx = grid_context(labeled)
    picks = SamplingByNearestNeighbour(alpha=3.0).select(ctx, 3).indices
    assert len(set(picks.tolist())) == 3 and not set(picks.tolist()) & set(labeled)
    # every pick is as near as possible to a stepped point: (5, 5) or (8, 5)
    targets = torch.tensor([[5.0, 5.0], [8.0, 5.0]])
    distance = torch.cdist(POOL[picks], targets).min(dim=1).values
    assert distance.max() <= 1.0


def test_steps_that_leave_the_manifold_are_reselected_from_the_labeled_set():
    labeled = [index_of(9, 5), index_of(9, 1), index_of(2, 5)]  # only (2, 5) can step inside
    for seed in range(5):
        selection = SamplingByNearestNeighbour(alpha=3.0).select(grid_context(labeled, seed), 1)
        assert selection.indices.tolist() == [index_of(5, 5)]
    drops = [SamplingByNearestNeighbour(alpha=3.0).select(grid_context(labeled, s), 1).n_rejected for s in range(10)]
    assert max(drops) > 0


def test_when_every_step_leaves_the_manifold_it_still_returns_k_samples():
    selection = SamplingByNearestNeighbour(alpha=3.0).select(grid_context([index_of(9, 5)]), 2)
    assert len(selection.indices) == 2
    assert set(selection.indices.tolist()) <= {index_of(9, 4), index_of(9, 6), index_of(8, 5)}


def test_manifold_radius_is_the_quantile_of_nearest_code_spacing():
    codes = PoolCodes(POOL.double().numpy(), manifold_quantile=0.99)
    assert codes.radius == pytest.approx(1.0)
    assert codes.on_manifold(np.array([[4.5, 4.5], [11.5, 5.0]])).tolist() == [True, False]


@pytest.mark.parametrize("bad", [dict(alpha=0.0), dict(manifold_quantile=1.5)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingByNearestNeighbour(**bad)
