"""The selection context's public scoring: batched, in the score dtype, Monte Carlo dropout."""

from __future__ import annotations

import numpy as np
import torch

from bench.testing import trained_context


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
