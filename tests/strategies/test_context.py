"""The selection context's public scoring: batched, in the score dtype, Monte Carlo dropout."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from bench.testing import trained_context
from strategies.base import CapabilityError
from tasks.base import Capability


def test_mc_probabilities_are_stochastic_passes_with_dropout_reproducible_from_the_rng():
    ctx = trained_context()
    torch_state, mode = torch.get_rng_state(), ctx.model.training
    probs = ctx.mc_probabilities(6)
    assert probs.shape == (6, len(ctx.pool_x), 4) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, len(ctx.pool_x)))
    assert not torch.equal(probs[0], probs[1])  # dropout was active
    assert torch.equal(torch.get_rng_state(), torch_state)  # the run's torch stream is untouched
    assert ctx.model.training == mode  # F is back in the mode it was in

    again = trained_context()
    assert torch.equal(again.mc_probabilities(6), probs)  # same seed, same masks
    assert not torch.equal(ctx.mc_probabilities(6), probs)  # the next draw from the rng differs


def test_score_without_dropout_is_deterministic_and_batched_like_the_pool_probabilities():
    ctx = trained_context()
    logits = ctx.score(lambda b: ctx.model(b))
    torch.testing.assert_close(torch.softmax(logits, 1), ctx.pool_probabilities)
    subset = ctx.pool_x[:7]
    assert ctx.score(lambda b: ctx.model(b), subset).shape == (7, 4)


def test_mc_probabilities_honour_the_score_dtype():
    exact = trained_context().mc_probabilities(3)
    ctx = trained_context()
    ctx.score_dtype = torch.bfloat16
    approx = ctx.mc_probabilities(3)
    assert approx.dtype == torch.float32
    torch.testing.assert_close(approx, exact, atol=3e-2, rtol=0)
    assert not np.array_equal(approx.numpy(), exact.numpy())


def _task_without(ctx, capability):
    """``ctx`` on a copy of its task that lacks ``capability``."""
    task = copy.copy(ctx.task)
    task.capabilities = frozenset(ctx.task.capabilities) - {capability}
    return dataclasses.replace(ctx, task=task)


def test_monte_carlo_dropout_on_a_task_without_dropout_names_the_missing_capability():
    ctx = _task_without(trained_context(), Capability.DROPOUT)
    with pytest.raises(CapabilityError, match="mc_probabilities needs dropout layers .*task 'blobs' does not provide"):
        ctx.mc_probabilities(3)
    with pytest.raises(CapabilityError, match="declares 'dropout' in its `requires`"):
        ctx.score(lambda b: ctx.model(b), dropout=True)


def test_monte_carlo_dropout_with_a_model_that_has_no_dropout_layer_is_refused():
    ctx = trained_context()
    ctx = dataclasses.replace(ctx, model=nn.Sequential(nn.Linear(8, 4)))  # declares dropout, has none
    with pytest.raises(CapabilityError, match="declares 'dropout', but its target model has no dropout layer"):
        ctx.mc_probabilities(3)


def test_class_probabilities_of_a_task_without_them_name_the_capability_not_an_index_error():
    ctx = _task_without(trained_context(), Capability.PROBABILITIES)  # as a regression task
    with pytest.raises(CapabilityError, match="needs class probabilities from the target model"):
        ctx.mc_probabilities(3)
    with pytest.raises(CapabilityError, match="pool_probabilities needs class probabilities"):
        _ = ctx.pool_probabilities
    without_embeddings = _task_without(trained_context(), Capability.EMBEDDINGS)
    with pytest.raises(CapabilityError, match="needs embeddings from the target model"):
        _ = without_embeddings.pool_embeddings
