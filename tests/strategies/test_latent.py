"""The latent step: its direction increases the loss, and F and G stay untouched."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf

from strategies.latent import harder_points, loss_gradients, unit_directions


def small_setup():
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    p = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 3, 0])
    return generator, model, p, y


def per_point_loss(model, generator, p, y):
    return nnf.cross_entropy(model(generator(p)), y, reduction="none")


def test_gradient_matches_finite_differences_of_each_points_own_loss():
    generator, model, p, y = small_setup()
    grad = loss_gradients(model, generator, nnf.cross_entropy, p, y)
    eps = 1e-3
    with torch.no_grad():
        for axis in range(3):
            shift = torch.zeros_like(p)
            shift[:, axis] = eps
            fd = (per_point_loss(model, generator, p + shift, y) - per_point_loss(model, generator, p - shift, y)) / (
                2 * eps
            )
            torch.testing.assert_close(grad[:, axis], fd, rtol=2e-2, atol=1e-4)


def test_the_step_direction_increases_the_loss():
    generator, model, p, y = small_setup()
    d = unit_directions(loss_gradients(model, generator, nnf.cross_entropy, p, y), np.random.default_rng(0))
    torch.testing.assert_close(d.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        before = per_point_loss(model, generator, p, y)
        for eps in (1e-3, 1e-2):
            assert (per_point_loss(model, generator, p + eps * d, y) > before).all()
        assert (per_point_loss(model, generator, p - 1e-3 * d, y) < before).all()


def test_points_step_alpha_and_parameters_do_not_change():
    generator, model, p, y = small_setup()
    params = [t.clone() for t in [*model.parameters(), *generator.parameters()]]
    model.train()
    moved = harder_points(model, generator, nnf.cross_entropy, p, y, 0.7, np.random.default_rng(0))
    torch.testing.assert_close((moved - p).norm(dim=1), torch.full((5,), 0.7))
    assert model.training  # restored
    for before, after in zip(params, [*model.parameters(), *generator.parameters()]):
        assert torch.equal(before, after) and after.grad is None


def test_a_zero_gradient_gets_a_random_unit_direction():
    grad = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = unit_directions(grad, np.random.default_rng(0))
    torch.testing.assert_close(d.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(d[1], torch.tensor([0.6, 0.8]))
