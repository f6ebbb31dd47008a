"""The plug-in meets latent-bench's contract (``bench.testing``), and BALD scores as it should.

Run after ``pip install -e examples/deepal_task`` (the harness finds the plug-in through its entry
points). The checks on ``deepal-mnist`` read the official MNIST from ``$BENCH_DATA`` (torchvision
layout, ``$BENCH_DATA/MNIST/raw``) and fail when it is missing, as ``bench.testing`` does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.testing import STRATEGY_CHECKS, check_task, trained_context
from strategies import STRATEGIES
from tasks import TASKS
from tasks.base import Capability

TASKS_TO_CHECK = [None, "deepal-mnist"]  # None: the harness's synthetic task (blobs, with dropout)


@pytest.mark.parametrize("task", TASKS_TO_CHECK, ids=["blobs", "deepal-mnist"])
@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
def test_bald_meets_the_strategy_contract(check, task):
    check("bald", task=task)


def test_deepal_mnist_meets_the_task_contract():
    check_task("deepal-mnist")


def test_both_come_from_the_installed_plugin():
    task, bald = TASKS.origin("deepal-mnist"), STRATEGIES.origin("bald")
    assert (task.module, task.distribution) == ("deepal_task.task", "latent-bench-deepal")
    assert (bald.module, bald.distribution) == ("deepal_task.bald", "latent-bench-deepal")


def test_bald_applies_where_F_has_dropout_only():
    bald = STRATEGIES.get("bald")
    assert bald.refuses(TASKS.create("deepal-mnist")) is None
    why = bald.refuses(TASKS.create("mnist"))  # the paper's LeNet has no dropout
    assert why is not None and "dropout" in why


def test_deepal_recipe():
    task = TASKS.create("deepal-mnist")
    p = task.protocol
    assert (p.initial, p.increment, p.rounds, p.epochs, p.batch_size, p.lr) == (500, 500, 10, 10, 64, 0.01)
    assert (p.optimizer, p.optimizer_options, p.start) == ("sgd", {"momentum": 0.5}, "fresh")
    assert Capability.DROPOUT in task.capabilities
    model = task.make_model()
    assert sum(p.numel() for p in model.parameters()) == 21_840  # DeepAL's MNIST net
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10) and model.embed(x).shape == (3, 50)


def test_mutual_information_is_zero_when_passes_agree_and_log2_when_they_split():
    from deepal_task.bald import mutual_information

    agree = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]])  # uncertain, but every pass says the same
    split = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # each pass confident, in disagreement
    assert mutual_information(agree).item() == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(split).item() == pytest.approx(math.log(2))


def test_bald_picks_the_largest_mutual_information():
    from deepal_task.bald import mutual_information

    # blobs with F trained on 30 samples, as a strategy sees it after round 1; built twice from the
    # same seed, so that the second context draws the same Monte Carlo dropout masks
    picks = STRATEGIES.create("bald", passes=5).select(trained_context(), 10).indices
    ctx = trained_context()
    unlabeled = ctx.unlabeled
    scores = mutual_information(ctx.mc_probabilities(5, ctx.pool_x[unlabeled])).numpy()
    chosen = np.isin(unlabeled, picks)
    assert chosen.sum() == 10 and scores[chosen].min() >= scores[~chosen].max() > 0
