"""MNIST: the official split, the paper's LeNet, and small end-to-end runs on real data."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench.cli.main import main
from tasks.mnist import LeNet, MNISTTask


def test_lenet_is_table_s7():
    model = LeNet()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 20, (5, 5)), (20, 50, (5, 5))]
    assert [(m.in_features, m.out_features) for m in linears] == [(800, 500), (500, 10)]
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10) and model.embed(x).shape == (3, 500)


def test_reads_the_official_split(mnist_root):
    data = MNISTTask().load(mnist_root, download=False)
    assert data.pool_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.pool_y[0].item() == 5  # the official first training label
    assert 0.0 <= data.pool_x.min() and data.pool_x.max() == 1.0
    assert torch.bincount(data.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_accuracy_is_in_percent():
    task = MNISTTask()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    assert task.scores(logits, torch.tensor([0, 1, 1, 1])) == {"accuracy": 50.0}


@pytest.mark.slow
def test_small_run_end_to_end_is_reproducible(tmp_path, mnist_root, capsys):
    args = [
        "run",
        "--task",
        "mnist",
        "--strategy",
        "random",
        "--subset",
        "1500",
        "--repeats",
        "2",
        "--initial",
        "100",
        "--increment",
        "100",
        "--rounds",
        "3",
        "--epochs",
        "3",
        "--data-root",
        str(mnist_root),
        "--quiet",
    ]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    a = pd.read_csv(tmp_path / "a" / "rounds.csv")
    b = pd.read_csv(tmp_path / "b" / "rounds.csv")
    assert a["value"].tolist() == b["value"].tolist()
    assert a["n_labeled"].tolist() == [100, 200, 300] * 2
    assert a["value"].iloc[2] > 60.0  # 300 real labels train LeNet well above chance
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_snn_and_baselines_run_end_to_end_on_a_small_subset(tmp_path, mnist_root):
    args = [
        "run",
        "--task",
        "mnist",
        "--strategy",
        "all",
        "--subset",
        "2000",
        "--initial",
        "100",
        "--increment",
        "100",
        "--rounds",
        "2",
        "--epochs",
        "2",
        "--data-root",
        str(mnist_root),
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert set(rounds["strategy"]) == {  # every strategy that applies to MNIST
        *("random", "snn", "uncertainty", "coreset"),
        *("vaal", "badge", "asal", "typiclust", "lcmd"),
    }
    first = rounds[rounds["round"] == 1]
    assert first["value"].nunique() == 1  # paired: same initial set and weights for all
    assert (rounds[rounds["round"] == 2]["n_labeled"] == 200).all()
