"""Core-set: greedy k-center gives the known greedy answer, exactly, and never re-picks, on either
update path (the plain O(N d) update and the projection bound), and takes the plain path where the
bound prunes nothing.

Both paths measure |x - c|^2 as |x|^2 + |c|^2 - 2 x.c in float32 (error about 1e-7 of
|x|^2 + |c|^2, not of the distance), and the picks are compared with a float64 brute force of
(x - c)^2 for exact equality. That holds on these inputs because the farthest point leads the
runner-up by far more than that rounding at every pick, except exact ties of small integers,
which every form computes exactly (the tie goes to the lower index either way). On inputs with
near-ties within rounding the picks may differ, as any float32 implementation's would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies.coreset as coreset
from strategies.coreset import PATHS, KCenterStats, k_center_greedy


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


@pytest.mark.parametrize("path", PATHS)
def test_matches_the_brute_force_greedy_with_many_ties(path):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (500, 4), generator=g).float()  # a small grid: many exact ties
    labeled = [0, 1, 2]
    assert k_center_greedy(x, labeled, 30, path) == brute_force_greedy(x, labeled, 30)


def embeddings(kind: str, seed: int, n: int = 2000, d: int = 200) -> torch.Tensor:
    """The three kinds of embeddings of the benchmark (benchmarks/coreset_paths.py), small."""
    g = torch.Generator().manual_seed(seed)
    if kind == "isotropic":  # no dominant axis: the bound prunes nothing
        return torch.randn(n, d, generator=g)
    if kind == "relu-latent20":  # relu(Z @ W) of a 20-d latent
        return torch.relu(torch.randn(n, 20, generator=g) @ torch.randn(20, d, generator=g))
    if kind == "lenet-like":  # a few dominant axes, as LeNet's MNIST features
        latent = torch.randn(n, 6, generator=g)
        return torch.relu(latent @ torch.randn(6, d, generator=g) + 0.2 * torch.randn(n, d, generator=g))
    raise ValueError(kind)


KINDS = ("isotropic", "relu-latent20", "lenet-like")


@pytest.fixture
def small_pools_may_use_the_bound(monkeypatch):
    """Lift the size gates, under which the bound's fixed costs would not pay for themselves (so
    that ``path="auto"`` tries the bound on these small pools, as it does on large ones)."""
    monkeypatch.setattr(coreset, "MIN_BOUND_ELEMENTS", 0)
    monkeypatch.setattr(coreset, "AXES_PAYBACK", 0.0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_path_matches_the_brute_force_greedy_on_every_kind_of_embedding(
    kind, path, small_pools_may_use_the_bound
):
    x = embeddings(kind, seed=1)
    labeled = np.random.default_rng(1).choice(len(x), 30, replace=False)
    stats = KCenterStats()
    assert k_center_greedy(x, labeled, 50, path, stats) == brute_force_greedy(x, labeled, 50)
    assert stats.picks == 50
    assert stats.bound_picks == {"plain": 0, "bound": 50}.get(path, stats.bound_picks)


def test_takes_the_plain_path_when_the_bound_prunes_nothing(small_pools_may_use_the_bound):
    x = embeddings("isotropic", seed=2)
    stats = KCenterStats()
    k_center_greedy(x, np.arange(30), 40, stats=stats)
    assert (stats.plain_picks, stats.bound_picks, stats.measured) == (40, 0, 0)
    assert not stats.projected  # the pool's projection is never built when it is not used
    assert 0 < stats.probes < 10  # the probe backs off: 1 + 1 + 2 + 4 + 8 + 16 plain picks between probes


def test_takes_the_bound_path_where_it_prunes(small_pools_may_use_the_bound):
    x = embeddings("lenet-like", seed=2)
    stats = KCenterStats()
    k_center_greedy(x, np.arange(30), 40, stats=stats)
    assert (stats.plain_picks, stats.bound_picks) == (0, 40) and stats.projected
    assert stats.measured < stats.break_even * 40 * len(x)  # fewer rows measured than the plain path would


def test_the_first_pick_without_centres_takes_the_plain_path(small_pools_may_use_the_bound):
    x = embeddings("lenet-like", seed=3)  # the bound prunes well, but not against infinite distances
    stats = KCenterStats()
    picks = k_center_greedy(x, [], 20, stats=stats)
    assert picks == brute_force_greedy(x, [], 20)
    assert stats.plain_picks >= 1 and stats.bound_picks >= 1


def test_small_pools_and_few_picks_take_the_plain_path_only():
    x = embeddings("lenet-like", seed=2)  # where the bound would prune, but its fixed costs would not pay
    stats = KCenterStats()
    k_center_greedy(x, np.arange(30), 40, stats=stats)
    assert (stats.plain_picks, stats.probes, stats.break_even) == (40, 0, 0.0)
    assert coreset.break_even_fraction(60000, 500, 500) > 0  # MNIST's pool and round
    assert coreset.break_even_fraction(60000, 500, 20) == 0  # the axes would cost more than 5%
    assert coreset.break_even_fraction(60000, 64, 500) == 0  # the plain update is cheap enough


@pytest.mark.parametrize("path", PATHS)
def test_small_blocks_give_the_same_picks(monkeypatch, path, small_pools_may_use_the_bound):
    # many blocks of rows, centres, Gram rows and candidates, and more centres than a block holds
    for name, value in dict(CHUNK=37, CENTRE_CHUNK=16, AXES_CHUNK=50, PROBE=100).items():
        monkeypatch.setattr(coreset, name, value)
    x = embeddings("lenet-like", seed=4, n=1500, d=64)
    labeled = np.random.default_rng(4).choice(len(x), 100, replace=False)
    assert k_center_greedy(x, labeled, 40, path) == brute_force_greedy(x, labeled, 40)


def test_an_unknown_path_is_refused():
    with pytest.raises(ValueError, match="unknown path"):
        k_center_greedy(torch.zeros(4, 2), [0], 1, path="fast")


def test_asking_for_more_points_than_remain_is_an_error():
    with pytest.raises(ValueError, match="only 2 are unlabeled"):
        k_center_greedy(torch.zeros(4, 2), [0, 1], 3)


@pytest.mark.parametrize("path", ["auto", "plain", "bound"])
def test_a_single_unlabeled_sample_is_picked_even_from_degenerate_embeddings(path):
    for x in (torch.randn(3000, 200), torch.zeros(3000, 200)):  # zeros: no principal axis at all
        assert k_center_greedy(x, list(range(2999)), 1, path=path) == [2999]
