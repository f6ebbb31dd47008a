"""TypiClust (TPC-RP): one pick per chosen cluster, never from a cluster holding a labeled sample
while others remain, its most typical point; k-means in torch; the shipped contract on Blobs
(both spaces), MNIST and IVUS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies.typiclust as tc
from bench.testing import STRATEGY_CHECKS, check_strategy
from strategies.typiclust import TypiClust, TypiClustStats, kmeans, picks_per_cluster, typicality, typiclust


def blobs(centres: np.ndarray, per, spread: float, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``per`` (one count, or one per blob) Gaussian points around each row of ``centres`` [C, d]:
    (points [n, d], the blob of each [n])."""
    rng = np.random.default_rng(seed)
    blob = np.repeat(np.arange(len(centres)), per)
    x = centres[blob] + spread * rng.standard_normal((len(blob), centres.shape[1]))
    return torch.as_tensor(x, dtype=torch.float32), blob


def test_one_pick_per_chosen_cluster_never_from_a_labeled_one():
    # 8 well-separated blobs of unequal sizes, 4 labeled points in 3 of them: 4 + k = 8 clusters,
    # one per blob, of which 5 hold no labeled point; k = 4 of them are taken, the largest first
    x, blob = blobs(20.0 * np.eye(8), [22, 40, 36, 24, 30, 38, 26, 34], 0.5)
    labeled = np.array([np.flatnonzero(blob == b)[i] for b, i in ((0, 0), (0, 1), (2, 0), (5, 0))])
    stats = TypiClustStats()
    picks, scores = typiclust(x, labeled, 4, 500, 20, torch.Generator().manual_seed(0), stats)
    assert stats.clusters == 8 and stats.chosen == 4
    assert len(set(blob[picks])) == 4, "one pick per cluster"
    assert not set(blob[picks]) & {0, 2, 5}, "never from a cluster holding a labeled sample"
    sizes = np.bincount(blob)
    free = [b for b in np.argsort(-sizes, kind="stable") if b not in (0, 2, 5)]
    assert list(blob[picks]) == free[:4] == [1, 7, 4, 6], "the largest unlabeled clusters, largest first"
    assert np.all(np.isfinite(scores)) and np.all(scores > 0)


def test_each_pick_is_its_clusters_most_typical_point():
    x, blob = blobs(np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]]), 60, 1.0, seed=1)
    picks, scores = typiclust(x, np.array([], dtype=np.int64), 3, 3, 20, torch.Generator().manual_seed(0))
    for pick, score in zip(picks, scores):
        members = np.flatnonzero(blob == blob[pick])
        d = torch.cdist(x[members].double(), x[members].double())
        d.fill_diagonal_(float("inf"))
        brute = 1.0 / (d.topk(20, largest=False).values.mean(1) + tc.EPSILON)
        assert members[int(brute.argmax())] == pick
        assert score == pytest.approx(float(brute.max()), rel=1e-4)


def test_labeled_clusters_come_after_the_free_ones_then_round_robin():
    x, blob = blobs(20.0 * np.eye(4), 30, 0.5, seed=2)
    labeled = np.array([0, 1])  # both in blob 0
    picks, _ = typiclust(x, labeled, 6, 4, 20, torch.Generator().manual_seed(0))
    assert set(blob[picks[:3]]) == {1, 2, 3}, "the free clusters first"
    assert blob[picks[3]] == 0, "then the cluster holding labeled samples"
    assert set(blob[picks[4:]]) <= {1, 2, 3} and len(set(blob[picks[4:]])) == 2, "then a second round"
    assert not set(picks) & set(labeled.tolist()) and len(set(picks)) == 6


def test_small_clusters_only_when_the_others_are_exhausted():
    rank = np.array([0, 1, 2])
    counts = picks_per_cluster(rank, np.array([3, 2, 4]), np.array([False, True, False]), 7)
    assert counts.tolist() == [3, 0, 4]
    assert picks_per_cluster(rank, np.array([3, 2, 4]), np.array([False, True, False]), 9).tolist() == [3, 2, 4]


def test_typicality_of_a_lone_point_and_its_own_distance():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert typicality(x, torch.tensor([0]), torch.tensor([0]), 20).tolist() == [0.0]
    # neighbours of 0 among {0, 1, 3}: itself excluded, K = 2: mean(1, 3) = 2
    assert typicality(x, torch.tensor([0]), torch.tensor([0, 1, 2]), 20).item() == pytest.approx(1 / (2 + tc.EPSILON))


@pytest.mark.parametrize("minibatch", [False, True], ids=["lloyd", "minibatch"])
def test_kmeans_finds_separated_blobs(monkeypatch, minibatch):
    if minibatch:
        monkeypatch.setattr(tc, "MINIBATCH_ABOVE", 100)
        monkeypatch.setattr(tc, "MINIBATCH", 256)
    x, blob = blobs(10.0 * np.eye(5, 16), 100, 0.3, seed=3)
    stats = TypiClustStats()
    assign, centres = kmeans(x, 5, torch.Generator().manual_seed(1), stats)
    assert stats.method == ("minibatch" if minibatch else "lloyd")
    assert centres.shape == (5, 16)
    # each blob is one cluster (a permutation of the labels)
    pairs = set(zip(blob.tolist(), assign.tolist()))
    assert len(pairs) == 5 and len({a for _, a in pairs}) == 5


def test_whole_pool_and_fewer_unlabeled_than_clusters():
    x, _ = blobs(np.zeros((1, 3)), 30, 1.0, seed=4)
    labeled = np.arange(0, 30, 2)
    picks, scores = typiclust(x, labeled, 15, 500, 20, torch.Generator().manual_seed(0))
    assert np.array_equal(np.sort(picks), np.arange(1, 30, 2)) and len(scores) == 15
    with pytest.raises(ValueError, match="only 15 are unlabeled"):
        typiclust(x, labeled, 16, 500, 20, torch.Generator().manual_seed(0))


def test_large_clusters_are_measured_on_a_subset_yet_the_whole_pool_can_be_taken(monkeypatch):
    monkeypatch.setattr(tc, "MAX_TYPICALITY_POINTS", 16)
    x, blob = blobs(np.array([[0.0, 0.0], [30.0, 0.0]]), 50, 1.0, seed=5)
    labeled = np.array([0, 50])
    picks, _ = typiclust(x, labeled, 2, 500, 20, torch.Generator().manual_seed(0))
    assert len(set(picks)) == 2 and not set(picks) & {0, 50}
    everything, scores = typiclust(x, labeled, 98, 2, 20, torch.Generator().manual_seed(0))
    assert np.array_equal(np.sort(everything), np.setdiff1d(np.arange(100), labeled)) and len(scores) == 98


@pytest.mark.parametrize("option", [{"space": "pixels"}, {"max_clusters": 0}, {"neighbours": -1}, {"neighbours": 2.5}])
def test_refuses_bad_options(option):
    with pytest.raises(ValueError, match=next(iter(option))):
        TypiClust(**option)


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
@pytest.mark.parametrize("options", [None, {"space": "model"}], ids=["generative", "model"])
def test_contract_on_blobs(check, options):
    check("typiclust", options=options)


@pytest.mark.parametrize("space", ["generative", "model"])
def test_contract_on_mnist(space, mnist_root, shared_data):
    check_strategy("typiclust", task="mnist", options={"space": space})


@pytest.mark.slow  # the IVUS VAE (300 epochs) trains in about 100 s on one thread; both spaces need it
@pytest.mark.parametrize("space", ["generative", "model"])
def test_contract_on_ivus(space, shared_data):
    check_strategy("typiclust", task="ivus", options={"space": space})
