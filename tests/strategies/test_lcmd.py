"""LCMD: the picks equal a brute-force loop (the full distance matrix to every centre recomputed
at each pick, float64); labeled samples are never picked; the first pick without centres is the
largest norm; the contract on Blobs, MNIST and IVUS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.testing import STRATEGY_CHECKS
from strategies.lcmd import largest_cluster_max_distance


def brute_force_lcmd(x: torch.Tensor, labeled, k: int) -> tuple[list[int], list[float]]:
    """The definition, naively: distances to every centre, each sample in the cluster of its
    nearest (the earliest on ties), cluster sizes summed in a Python loop, the farthest
    non-centre sample among the clusters of largest size (lowest index on ties)."""
    x = x.double()
    centres = [int(i) for i in labeled]
    picks, scores = [], []
    for _ in range(k):
        if not centres:
            i = int(torch.argmax(x.pow(2).sum(1)))
            picks.append(i), scores.append(float(x[i].pow(2).sum()))
            centres.append(i)
            continue
        d2 = torch.cdist(x, x[centres], compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # [N, centres]
        nearest, cluster = d2.min(1)
        nearest[centres] = 0.0
        cluster[centres] = torch.arange(len(centres))
        sizes = [0.0] * len(centres)
        for j in range(len(x)):
            sizes[int(cluster[j])] += float(nearest[j])
        largest = {c for c, s in enumerate(sizes) if s == max(sizes)}
        best, i = -1.0, -1
        for j in range(len(x)):
            if j not in centres and int(cluster[j]) in largest and float(nearest[j]) > best:
                best, i = float(nearest[j]), j
        picks.append(i), scores.append(best)
        centres.append(i)
    return picks, scores


def embeddings(seed: int, n: int = 300, d: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 4, generator=g) @ torch.randn(4, d, generator=g)
    return torch.relu(latent + 0.3 * torch.randn(n, d, generator=g))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_labeled", [0, 1, 30])
@pytest.mark.parametrize("k", [1, 10, 40])
def test_picks_equal_a_brute_force_loop(seed, n_labeled, k):
    x = embeddings(seed)
    labeled = np.random.default_rng(seed).choice(len(x), n_labeled, replace=False)
    picks, scores = largest_cluster_max_distance(x, labeled, k)
    expected, expected_scores = brute_force_lcmd(x, labeled, k)
    assert picks == expected
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-5)
    assert not set(picks) & set(labeled.tolist()) and len(set(picks)) == k


def test_takes_the_farthest_point_of_the_largest_cluster_not_the_farthest_overall():
    # centre 0 at 0 with a wide cluster of many points; centre 1 at 100 with one far outlier at 104
    x = torch.tensor([[0.0], [100.0], [1.0], [-1.0], [2.0], [-2.0], [3.0], [104.0]])
    # sizes: cluster 0: 1 + 1 + 4 + 4 + 9 = 19; cluster 1: 16 -> the farthest of cluster 0 (3.0, index 6)
    picks, scores = largest_cluster_max_distance(x, [0, 1], 1)
    assert picks == [6] and scores == [9.0]


def test_never_picks_labeled_samples_and_without_centres_starts_at_the_largest_norm():
    x = torch.tensor([[0.0], [5.0], [-7.0], [1.0]])
    picks, scores = largest_cluster_max_distance(x, [], 2)
    assert picks[0] == 2 and scores[0] == 49.0
    # centres -7 and 5: 0 (25 from 5) and 1 (16 from 5) form the largest cluster; then 1 joins 0
    assert largest_cluster_max_distance(x, [2, 1], 2) == ([0, 3], [25.0, 1.0])


def test_duplicates_of_centres_are_picked_when_nothing_else_is_left():
    x = torch.tensor([[0.0], [0.0], [3.0], [0.0]])
    picks, scores = largest_cluster_max_distance(x, [0], 3)
    assert picks == [2, 1, 3] and scores == [9.0, 0.0, 0.0]


def test_refuses_more_picks_than_unlabeled_samples():
    with pytest.raises(ValueError, match="only 2 are unlabeled"):
        largest_cluster_max_distance(torch.zeros(4, 2), [0, 1], 3)


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
def test_meets_the_contract_on_blobs(check):
    check("lcmd")


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
@pytest.mark.parametrize("task", ["mnist", pytest.param("ivus", marks=pytest.mark.slow)])  # IVUS's round 1: ~50 s
def test_meets_the_contract_on_a_real_task(check, task, shared_data):
    check("lcmd", task=task)
