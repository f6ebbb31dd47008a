"""ASAL: latent points stepped towards F's maximum entropy, then the nearest unlabeled pool samples
without repeats (in F's features or the latent codes); the contract on Blobs and MNIST; refused
on IVUS, which has no class probabilities."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch import nn

import strategies.asal as asal
from bench.run.loop import selection_context
from bench.testing import check_strategy
from bench.testing.harness import _checking
from strategies.asal import AdversarialSampling, entropy_ascent, entropy_of_logits, nearest_available_rows
from tasks.base import Capability, Metric, Protocol, Task


class Identity(nn.Module):
    """A 'generator' whose latent space is the input space: G(z) = z, E(x) = x."""

    latent_dim = 2

    def encode(self, x):
        return x

    def decode(self, z):
        return z


class Stripes(nn.Module):
    """Two classes split by the line x0 = 0: logits (2 x0, -2 x0); entropy peaks on the line.
    Its features (``embed``) are the inputs themselves."""

    def embed(self, x):
        return x

    def forward(self, x):
        return torch.stack([2 * x[:, 0], -2 * x[:, 0]], dim=1)


class Plane(Task):
    name = "plane"
    description = "2-D points, two classes split by x0 = 0 (tests only)"
    metric = Metric("accuracy", True, "accuracy")
    protocol = Protocol(1, 1, 1, 1, 1, 1.0)
    capabilities = frozenset({Capability.PROBABILITIES, Capability.EMBEDDINGS, Capability.GENERATIVE})

    def load(self, data_root, download=True):
        raise NotImplementedError

    def make_model(self):
        return Stripes()

    def loss(self, output, target):
        return nnf.cross_entropy(output, target)

    def scores(self, output, target):
        return {"accuracy": 0.0}


def plane_context(pool: torch.Tensor, labeled=(), seed: int = 0):
    return selection_context(
        Plane(),
        Stripes(),
        pool,
        np.asarray(labeled, dtype=np.int64),
        torch.zeros(0, 2),
        torch.zeros(0, dtype=torch.int64),
        np.random.default_rng(seed),
        1,
        generative=Identity(),
    )


def test_synthesized_points_have_higher_entropy_than_their_starts_on_a_toy_boundary():
    z = torch.as_tensor(np.random.default_rng(0).standard_normal((200, 2)), dtype=torch.float32)
    best, best_h, start_h = entropy_ascent(Stripes(), Identity().decode, z, 10, 0.1, np.random.default_rng(1))
    assert (best_h >= start_h).all()
    moved = z[:, 0].abs() > 0.051  # closer to the line than a half step, a point's start is its best
    assert (best_h[moved] > start_h[moved]).all()
    # each step moves 0.1 straight towards the line x0 = 0 (crossing it, it turns back), and the
    # best point of the path is the one nearest the line
    path = [z[:, 0].double()]
    for _ in range(10):
        path.append(path[-1] - 0.1 * path[-1].sign())
    nearest = torch.stack(path).abs().min(0).values
    torch.testing.assert_close(best[:, 0].abs().double(), nearest, atol=1e-5, rtol=0)
    torch.testing.assert_close(best[:, 1], z[:, 1])  # the gradient has no x1 part
    # the entropies returned are F's on the returned points
    torch.testing.assert_close(best_h, entropy_of_logits(Stripes()(best)))
    torch.testing.assert_close(start_h, entropy_of_logits(Stripes()(z)))


def test_synthesized_points_have_higher_entropy_than_their_starts_on_mnist(mnist_root, shared_data):
    with _checking(AdversarialSampling, "mnist", None) as it:
        context = it.round_one().unit().context(1)
    # F after the checks' round 1 (30 samples, 2 epochs) is near uniform; train a copy on the same
    # 30 samples until it is confident, so that entropy varies across the latent space
    model = copy.deepcopy(context.model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        optimizer.zero_grad()
        nnf.cross_entropy(model(context.train_x), context.train_y).backward()
        optimizer.step()
    context = dataclasses.replace(context, model=model.eval(), rng=np.random.default_rng(5))
    z, h, start_h = AdversarialSampling().synthesize(context, 64)
    assert (h >= start_h).all()
    assert float((h > start_h).float().mean()) > 0.9
    assert float(h.mean()) > float(start_h.mean()) + 0.2, (float(start_h.mean()), float(h.mean()))
    with torch.no_grad():  # recomputed from scratch: F's entropy of G(z) for the returned z
        again = entropy_of_logits(model(context.generative.decode(z)))
    torch.testing.assert_close(h, again, atol=1e-4, rtol=1e-4)


def test_zero_steps_keep_the_prior_draws():
    z = torch.randn(20, 2)
    best, best_h, start_h = entropy_ascent(Stripes(), Identity().decode, z, 0, 0.1, np.random.default_rng(0))
    assert torch.equal(best, z) and torch.equal(best_h, start_h)


def test_the_model_keeps_its_mode_and_parameters():
    model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    before = [p.clone() for p in model.parameters()]
    entropy_ascent(model, Identity().decode, torch.randn(10, 2), 3, 0.2, np.random.default_rng(0))
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def greedy_brute_force(queries: np.ndarray, rows: np.ndarray, unavailable: np.ndarray) -> list[int]:
    """Each query in order takes its nearest row (float64) not unavailable nor taken before."""
    taken = unavailable.copy()
    picks = []
    for q in queries:
        d = ((rows - q) ** 2).sum(1)
        d[taken] = np.inf
        picks.append(int(np.argmin(d)))
        taken[picks[-1]] = True
    return picks


@pytest.mark.parametrize("top", [64, 2])
def test_nearest_available_rows_is_the_greedy_matching_in_query_order(monkeypatch, top):
    monkeypatch.setattr(asal, "TOP", top)  # top=2: queries run out of rows and are searched again
    monkeypatch.setattr(asal, "ROW_CHUNK", 37)
    monkeypatch.setattr(asal, "QUERY_CHUNK", 5)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((300, 6))
    queries = np.concatenate([rng.standard_normal((20, 6)), np.zeros((20, 6))])  # 20 queries on one spot
    unavailable = rng.random(300) < 0.2
    expected = greedy_brute_force(queries, rows, unavailable)
    mask = unavailable.copy()
    picks = nearest_available_rows(torch.as_tensor(queries), torch.as_tensor(rows), mask)
    assert picks.tolist() == expected
    assert len(set(picks.tolist())) == len(picks) and not unavailable[picks].any()
    assert mask[picks].all()  # the picks are marked unavailable


def test_nearest_available_rows_can_take_every_available_row(monkeypatch):
    monkeypatch.setattr(asal, "TOP", 2)
    rows = torch.randn(50, 3)
    unavailable = np.zeros(50, dtype=bool)
    unavailable[:10] = True
    picks = nearest_available_rows(torch.zeros(40, 3), rows, unavailable)
    assert sorted(picks.tolist()) == list(range(10, 50))
    with pytest.raises(ValueError, match="only 0 pool rows are available"):
        nearest_available_rows(torch.zeros(1, 3), rows, unavailable)


GRID = torch.tensor([[i / 2, j / 2] for i in range(-6, 7) for j in range(-6, 7)])  # 13 x 13, spacing 0.5


@pytest.mark.parametrize("space", ["model", "latent"])
def test_picks_are_the_nearest_unlabeled_pool_samples_to_the_synthesized_points(space):
    # Stripes' features and Identity's codes are the inputs: both spaces are the plane itself
    on_line = torch.nonzero(GRID[:, 0] == 0).squeeze(1).tolist()
    labeled = on_line[:3]
    selection = AdversarialSampling(steps=40, step=0.1, space=space).select(plane_context(GRID, labeled), 8)
    z, h, _ = AdversarialSampling(steps=40, step=0.1).synthesize(plane_context(GRID, labeled), 8)
    order = torch.sort(h, descending=True, stable=True).indices
    unavailable = np.zeros(len(GRID), dtype=bool)
    unavailable[labeled] = True
    assert selection.indices.tolist() == greedy_brute_force(
        z[order].double().numpy(), GRID.double().numpy(), unavailable
    )
    # the synthesized points end within half a step (0.05) of the line x0 = 0, where the entropy
    # is at least that of logits (0.1, -0.1); the picks are on the line or beside it
    floor = float(entropy_of_logits(torch.tensor([[0.1, -0.1]])))
    assert (selection.scores >= floor - 1e-6).all() and (selection.scores <= np.log(2) + 1e-6).all()
    assert (np.diff(selection.scores) <= 0).all()  # in order of entropy, highest first
    assert (GRID[selection.indices, 0].abs() <= 0.5).all()


def test_scores_are_the_synthesized_entropies_in_pick_order():
    context = plane_context(GRID)
    strategy = AdversarialSampling(steps=2, step=0.1, candidates=3)
    selection = strategy.select(context, 10)
    again = plane_context(GRID)  # the same draws, from the same seed
    z, h, _ = AdversarialSampling(steps=2, step=0.1).synthesize(again, 30)
    np.testing.assert_allclose(selection.scores, np.sort(h.numpy())[::-1][:10], rtol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": -1}, "steps must be a whole number >= 0"),
        ({"steps": 1.5}, "steps must be a whole number >= 0"),
        ({"step": 0.0}, "step must be a positive number"),
        ({"step": float("inf")}, "step must be a positive number"),
        ({"space": "pixels"}, "space must be one of model, latent"),
        ({"candidates": 0}, "candidates must be a whole number >= 1"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        AdversarialSampling(**options)


def test_meets_the_contract_on_blobs():
    check_strategy(AdversarialSampling)


def test_meets_the_contract_on_blobs_in_the_latent_space():
    check_strategy(AdversarialSampling, options={"space": "latent", "asal.steps": 3, "candidates": 2})


def test_meets_the_contract_on_mnist(mnist_root, shared_data):
    check_strategy(AdversarialSampling, task="mnist")


def test_meets_the_contract_on_mnist_in_the_latent_space(mnist_root, shared_data):
    check_strategy(AdversarialSampling, task="mnist", options={"space": "latent"})


def test_asal_is_refused_on_ivus_which_has_no_class_probabilities():
    from bench.run.config import ConfigError, RunConfig
    from bench.run.plan import plan_run
    from bench.testing import registered

    with (
        registered(AdversarialSampling),
        pytest.raises(ConfigError, match="'asal' does not apply to task 'ivus'.*class probabilities"),
    ):
        plan_run(RunConfig(task="ivus", strategies=["asal"]))
