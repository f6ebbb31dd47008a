"""SI: synthesized samples labeled online, rejected candidates replaced and counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch import nn

from bench.run.loop import selection_context
from strategies.base import SelectionContext
from strategies.si import SamplingByInterpolation, SynthesisError
from tasks.base import Capability, Labels, Metric, Protocol, Task


class Plane(nn.Module):
    """A 'VAE' over 2-D inputs whose latent space is the input space."""

    latent_dim = 2

    def encode(self, x):
        return x

    def decode(self, z):
        return z


class Solver(Task):
    """Regression of y = x0 + 2 x1; the 'solver' refuses inputs with x0 > 1."""

    name = "solver"
    description = "tests only"
    metric = Metric("mse", False, "mse")
    protocol = Protocol(1, 1, 1, 1, 1, 1.0)
    capabilities = frozenset({Capability.GENERATIVE, Capability.SYNTHETIC_LABELS})

    def __init__(self, refuse_above: float = 1.0) -> None:
        self.refuse_above = refuse_above
        self.calls = 0

    def load(self, data_root, download=True):
        raise NotImplementedError

    def make_model(self):
        torch.manual_seed(0)
        return nn.Linear(2, 1)

    def loss(self, output, target):
        return nnf.mse_loss(output, target)

    def scores(self, output, target):
        return {"mse": 0.0}

    def label_inputs(self, x):
        self.calls += 1
        ok = (x[:, 0] <= self.refuse_above).numpy()
        targets = (x[:, :1] + 2 * x[:, 1:2]).clone()
        errors = {int(i): "x0 too large" for i in np.flatnonzero(~ok)}
        return Labels(x.clone(), targets, ok, errors)


def context(task, strategy_latents=None, train_y=None, seed=0) -> SelectionContext:
    model = task.make_model()
    n = 0 if strategy_latents is None else len(strategy_latents)
    return selection_context(
        task,
        model,
        torch.zeros(0, 2),
        np.empty(0, np.int64),
        torch.zeros(n, 2) if strategy_latents is None else strategy_latents,
        torch.zeros(n, 1) if train_y is None else train_y,
        np.random.default_rng(seed),
        1,
        generative=Plane(),
    )


def test_initial_set_is_drawn_from_the_prior_and_labeled():
    task = Solver(refuse_above=np.inf)
    si = SamplingByInterpolation()
    selection = si.initial(context(task), 500)
    assert selection.inputs.shape == (500, 2) and selection.targets.shape == (500, 1)
    torch.testing.assert_close(selection.targets, selection.inputs[:, :1] + 2 * selection.inputs[:, 1:])
    z = selection.latents
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1  # N(0, I)
    assert torch.equal(si.latents, z)


def test_rejected_candidates_are_replaced_counted_and_logged(caplog):
    task = Solver(refuse_above=1.0)  # P(z0 > 1) = 16%
    with caplog.at_level("INFO", logger="strategies.si"):
        selection = SamplingByInterpolation().initial(context(task), 200)
    assert len(selection.inputs) == 200 and (selection.inputs[:, 0] <= 1).all()
    assert 10 < selection.n_rejected < 70
    assert task.calls >= 2
    assert f"rejected {selection.n_rejected} of" in caplog.text and "x0 too large" in caplog.text


def test_later_rounds_step_alpha_from_earlier_latents():
    task = Solver(refuse_above=np.inf)
    si = SamplingByInterpolation(alpha=0.25)
    first = si.initial(context(task), 50)
    ctx = context(task, strategy_latents=first.inputs, train_y=first.targets)
    second = si.select(ctx, 20)
    # every new z' lies exactly alpha from some earlier z
    distances = torch.cdist(second.latents.double(), first.latents.double())
    assert ((distances - 0.25).abs() < 1e-5).any(dim=1).all()
    assert len(si.latents) == 70  # the union grows


def test_a_labeler_that_rejects_everything_stops_with_a_clear_error():
    task = Solver(refuse_above=-np.inf)
    with pytest.raises(SynthesisError, match="rejected 100 of 100 .* x0 too large"):
        SamplingByInterpolation(max_candidates=10).initial(context(task), 10)


def test_si_is_refused_on_tasks_without_a_labeler_for_synthetic_inputs():
    from bench.run.config import ConfigError, RunConfig
    from bench.run.plan import plan_run

    with pytest.raises(ConfigError, match="'si' does not apply to task 'mnist'.*labeler for synthetic inputs.*snn"):
        plan_run(RunConfig(task="mnist", strategies=["si"]))


def pool_context(task, pool_x, seed=0) -> SelectionContext:
    return selection_context(
        task,
        task.make_model(),
        pool_x,
        np.empty(0, np.int64),
        torch.zeros(0, 2),
        torch.zeros(0, 1),
        np.random.default_rng(seed),
        1,
        generative=Plane(),
    )


def test_aggregate_prior_draws_from_a_gaussian_fitted_to_the_pool_codes():
    task = Solver(refuse_above=np.inf)
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0], [1.0, 0.5]])
    pool = torch.randn(4000, 2, generator=generator) @ mixing.T + torch.tensor([3.0, -1.0])
    z = SamplingByInterpolation(prior="aggregate").initial(pool_context(task, pool), 4000).latents.double()
    torch.testing.assert_close(z.mean(0), pool.double().mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), torch.cov(pool.double().T), atol=0.15, rtol=0)


def test_standard_prior_is_the_paper_draw():
    task = Solver(refuse_above=np.inf)
    z = SamplingByInterpolation().initial(pool_context(task, torch.zeros(10, 2)), 50).latents
    expected = torch.as_tensor(np.random.default_rng(0).standard_normal((50, 2)), dtype=torch.float32)
    torch.testing.assert_close(z, expected, atol=0, rtol=0)


def test_pool_start_takes_the_shared_initial_set_then_steps_from_its_codes():
    task = Solver(refuse_above=np.inf)
    si = SamplingByInterpolation(start="pool")
    assert si.initial(pool_context(task, torch.zeros(10, 2)), 5) is None  # the harness's initial set
    train_x = torch.tensor([[0.1, 0.2], [0.3, -0.4], [-0.5, 0.6]])
    ctx = context(task, strategy_latents=train_x, train_y=train_x[:, :1] + 2 * train_x[:, 1:])
    selection = si.select(ctx, 4)
    torch.testing.assert_close(si.latents[:3], train_x)  # E(x) of the real set, in training-set order
    distances = (selection.latents[:, None] - train_x[None]).norm(dim=2)  # [4 new, 3 real]
    assert ((distances - si.alpha).abs().amin(1) < 1e-5).all()  # each is one step of alpha from a real code


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"start": "posterior"}, "start must be one of"),
        ({"prior": "uniform"}, "prior must be one of"),
        ({"start": "pool", "prior": "aggregate"}, "no effect with start='pool'"),
    ],
)
def test_bad_start_or_prior_is_refused(options, problem):
    with pytest.raises(ValueError, match=problem):
        SamplingByInterpolation(**options)
