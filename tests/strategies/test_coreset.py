"""Core-set: greedy k-center gives the known greedy answer, exactly, and never re-picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strategies.coreset import k_center_greedy


def brute_force_greedy(x: torch.Tensor, labeled, k: int) -> list[int]:
    """The textbook algorithm in float64 NumPy: full distance update after every pick, lowest
    index on ties (``np.argmax`` returns the first maximum)."""
    x = x.double().numpy()
    d = np.full(len(x), np.inf)
    for c in labeled:
        d = np.minimum(d, ((x - x[c]) ** 2).sum(1))
    d[list(labeled)] = -1
    picks = []
    for _ in range(k):
        i = int(np.argmax(d))
        picks.append(i)
        d = np.minimum(d, ((x - x[i]) ** 2).sum(1))
        d[i] = -1
    return picks


def test_points_on_a_line():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # farthest from 0 is 10; then 3 (distance 3); then 1 and 2 tie at distance 1 -> lower index
    assert k_center_greedy(x, [0], 3) == [4, 3, 1]


def test_corners_of_a_square_around_a_labeled_centre():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [0.5, 0.0]])
    # every corner is sqrt(2) from the centre, and stays so after other corners are picked
    # (the nearest centre counts): the ties go to the lower index each time, and (0.5, 0) is last
    assert k_center_greedy(x, [0], 5) == [1, 2, 3, 4, 5]


def test_never_picks_labeled_points_even_when_they_are_farthest():
    x = torch.tensor([[0.0], [100.0], [1.0], [2.0]])
    assert k_center_greedy(x, [0, 1], 2) == [3, 2]


def test_duplicates_of_labeled_points_come_last():
    x = torch.tensor([[0.0], [0.0], [5.0], [0.0]])
    assert k_center_greedy(x, [0], 3) == [2, 1, 3]


def test_without_labeled_points_starts_at_index_zero():
    x = torch.tensor([[3.0], [0.0], [10.0]])
    assert k_center_greedy(x, [], 2) == [0, 2]


@pytest.mark.parametrize("seed", range(3))
def test_matches_the_brute_force_greedy_on_clustered_high_dimensional_data(seed):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(3000, 6, generator=g)
    x = torch.relu(latent @ torch.randn(6, 120, generator=g) + 0.2 * torch.randn(3000, 120, generator=g))
    labeled = np.random.default_rng(seed).choice(3000, 40, replace=False)
    assert k_center_greedy(x, labeled, 60) == brute_force_greedy(x, labeled, 60)


def test_matches_the_brute_force_greedy_with_many_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (500, 4), generator=g).float()  # a small grid: many exact ties
    labeled = [0, 1, 2]
    assert k_center_greedy(x, labeled, 30) == brute_force_greedy(x, labeled, 30)


def test_asking_for_more_points_than_remain_is_an_error():
    with pytest.raises(ValueError, match="only 2 are unlabeled"):
        k_center_greedy(torch.zeros(4, 2), [0, 1], 3)
