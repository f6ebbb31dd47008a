"""BADGE: the factorised k-means++ seeding picks what a naive one over the materialised gradient
embeddings picks, from the same RNG; its first pick is the largest gradient embedding; it never
picks labeled samples; the contract on Blobs and MNIST; refused on IVUS (no class probabilities).

The naive version builds g = (p - onehot(argmax p)) (x) h [N, C d] and measures (g_i - g_c)^2 in
float64; the strategy measures the factorised form in float32. The draws agree because each one
is a single uniform compared with cumulative D^2 that differ only by rounding: a pick could
differ only where the uniform falls within about 1e-6 of the total from a boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.testing import STRATEGY_CHECKS
from strategies.badge import badge_seeding


def naive_badge(p: torch.Tensor, h: torch.Tensor, candidates: np.ndarray, k: int, rng: np.random.Generator):
    """The textbook algorithm over the materialised gradient embeddings of the candidates only,
    the same draw rule: a float64 cumulative D^2 and one uniform per pick, uniform over the rest
    where all D^2 are 0."""
    a = p.double().clone()
    a[torch.arange(len(a)), a.argmax(1)] -= 1.0
    g = (a[:, :, None] * h.double()[:, None, :]).flatten(1)[candidates].numpy()  # [n, C d]
    first = int(np.argmax((g**2).sum(1)))
    picks, scores = [first], [float((g[first] ** 2).sum())]
    d2 = np.full(len(g), np.inf)
    for _ in range(k - 1):
        d2 = np.minimum(d2, ((g - g[picks[-1]]) ** 2).sum(1))
        d2[picks] = 0.0
        cdf = np.cumsum(d2)
        if cdf[-1] > 0:
            target = min(rng.random() * cdf[-1], np.nextafter(cdf[-1], 0.0))
            i = int(np.searchsorted(cdf, target, side="right"))
            scores.append(float(d2[i]))
        else:
            rest = np.setdiff1d(np.arange(len(g)), picks)
            i = int(rest[rng.integers(len(rest))])
            scores.append(0.0)
        picks.append(i)
    return candidates[picks].tolist(), scores


def pool(seed: int, n: int = 300, c: int = 5, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(2.0 * torch.randn(n, c, generator=g), 1)
    h = torch.relu(torch.randn(n, d, generator=g))
    return p, h


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_labeled", [0, 40])
@pytest.mark.parametrize("k", [1, 10, 60])
def test_picks_equal_a_naive_materialised_implementation(seed, n_labeled, k):
    p, h = pool(seed)
    labeled = np.random.default_rng(seed).choice(len(p), n_labeled, replace=False)
    candidates = np.setdiff1d(np.arange(len(p)), labeled)
    picks, scores = badge_seeding(p, h, candidates, k, np.random.default_rng(100 + seed))
    expected, expected_scores = naive_badge(p, h, candidates, k, np.random.default_rng(100 + seed))
    assert picks == expected
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-6)
    assert not set(picks) & set(labeled.tolist())
    assert len(set(picks)) == k


def test_first_pick_is_the_largest_gradient_embedding_and_labeled_samples_are_never_picked():
    p, h = pool(7)
    a = p.clone()
    a[torch.arange(len(a)), a.argmax(1)] -= 1.0
    norms = (a.pow(2).sum(1) * h.pow(2).sum(1)).numpy()
    best = int(np.argmax(norms))
    labeled = np.array([best])  # the largest overall is labeled: the largest unlabeled comes first
    candidates = np.setdiff1d(np.arange(len(p)), labeled)
    picks, scores = badge_seeding(p, h, candidates, 5, np.random.default_rng(0))
    assert picks[0] == int(candidates[np.argmax(norms[candidates])])
    assert scores[0] == pytest.approx(norms[picks[0]], rel=1e-5)
    assert best not in picks


def test_confident_predictions_give_zero_embeddings_and_uniform_picks():
    p = torch.zeros(50, 3)
    p[:, 0] = 1.0  # one-hot: every g is 0
    h = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    candidates = np.arange(10, 50)
    picks, scores = badge_seeding(p, h, candidates, 40, np.random.default_rng(0))
    assert sorted(picks) == candidates.tolist() and picks[0] == 10  # first: argmax of zeros, lowest index
    assert scores == [0.0] * 40
    again, _ = badge_seeding(p, h, candidates, 40, np.random.default_rng(0))
    assert again == picks


def test_refuses_more_picks_than_unlabeled_samples():
    p, h = pool(0, n=10)
    with pytest.raises(ValueError, match="only 4 are unlabeled"):
        badge_seeding(p, h, np.arange(4), 5, np.random.default_rng(0))


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
def test_meets_the_contract_on_blobs(check):
    check("badge")


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
def test_meets_the_contract_on_mnist(check, shared_data):
    check("badge", task="mnist")


def test_is_refused_on_ivus_which_has_no_class_probabilities():
    from bench.run.config import ConfigError, RunConfig
    from bench.run.plan import plan_run

    with pytest.raises(ConfigError, match="'badge' does not apply to task 'ivus'.*class probabilities"):
        plan_run(RunConfig(task="ivus", strategies=["badge"]))
