"""IVUS-FEM: the Table S6 network, the labeled synthetic cohort, and labeling synthesized masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import labelers.fem as fem
from bench.cli.main import main
from bench.paths import cache_root
from tasks import TASKS
from tasks.ivus import STRESS_SCALE_KPA, IVUSTask, StressNet, scale_stress

SMALL = dict(cohort_size=60, pool_size=45, workers=1)


def test_stress_net_is_table_s6_with_a_64x64_output():
    net = StressNet()
    convs = [m for m in net.encoder if isinstance(m, nn.Conv2d)]
    deconvs = [m for m in net.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 8, (2, 2)),
        (8, 16, (2, 2)),
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
        (64, 64, (2, 2)),
    ]
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [(64, 64), (64, 32), (32, 16), (16, 8), (8, 1)]
    assert [c.kernel_size for c in deconvs] == [(2, 2)] * 4 + [(3, 3)]  # the one change: 62 -> 64
    x = torch.zeros(2, 1, 64, 64)
    out = net(x)
    assert out.shape == (2, 1, 64, 64) and (0 <= out).all() and (out <= 1).all()
    assert net.embed(x).shape == (2, 256)


def test_stress_is_scaled_by_the_fixed_scale_and_clipped():
    np.testing.assert_allclose(
        scale_stress(np.array([0.0, 30.0, STRESS_SCALE_KPA, 2 * STRESS_SCALE_KPA])),
        [0.0, 30.0 / STRESS_SCALE_KPA, 1.0, 1.0],
    )


class SmallIVUS(IVUSTask):
    """The IVUS task on a small cohort, caching its labels where the harness would."""

    name = "ivus-small"

    def __init__(self) -> None:
        super().__init__(**SMALL)
        self.cache_dir = cache_root()


@pytest.fixture(scope="module")
def small_data():
    return SmallIVUS().load()


def test_small_cohort_is_split_into_pool_and_test(small_data):
    data = small_data
    assert data.pool_x.shape == (45, 1, 64, 64) and data.test_x.shape == (15, 1, 64, 64)
    assert set(data.pool_x.unique().tolist()) == {0.0, 1.0}
    assert ((data.pool_y > 0) <= (data.pool_x > 0)).all()  # stress only on wall pixels
    assert 0 < data.pool_y.max() < 1


def test_labels_are_cached_so_a_second_load_solves_nothing(small_data, monkeypatch):
    solves = []
    original = fem._label_one
    monkeypatch.setattr(fem, "_label_one", lambda *a: solves.append(1) or original(*a))
    again = SmallIVUS().load()
    assert solves == []
    assert torch.equal(again.pool_y, small_data.pool_y)


def test_metric_is_mse_of_normalised_maps_with_rmse_in_kpa():
    task = IVUSTask()
    target = torch.zeros(2, 1, 64, 64)
    output = torch.full_like(target, 0.1)
    scores = task.scores(output, target)
    assert scores["mse"] == pytest.approx(0.01)
    assert scores["rmse_kpa"] == pytest.approx(0.1 * STRESS_SCALE_KPA)
    assert list(scores) == ["mse", *task.extra_metrics()]


def test_synthesized_images_are_thresholded_cleaned_and_labeled(small_data):
    good = small_data.pool_x[:2] * 0.8 + 0.05  # soft images of two valid walls
    blank = torch.zeros(1, 1, 64, 64)
    labels = SmallIVUS().label_inputs(torch.cat([good, blank]))
    assert labels.ok.tolist() == [True, True, False]
    assert "empty" in labels.errors[2]
    assert torch.equal(labels.inputs[:2], small_data.pool_x[:2])
    torch.testing.assert_close(labels.targets[:2], small_data.pool_y[:2])


@pytest.mark.slow
def test_random_si_and_snn_run_end_to_end_on_a_small_cohort(tmp_path, small_data):
    TASKS.add("ivus-small", SmallIVUS)
    try:
        args = [
            "run",
            "--task",
            "ivus-small",
            "--strategy",
            "random,si,snn",
            "--initial",
            "10",
            "--increment",
            "10",
            "--rounds",
            "3",
            "--epochs",
            "3",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
        assert main(args) == 0
    finally:
        TASKS.remove("ivus-small")
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    si = rounds[rounds["strategy"] == "si"]
    assert si["n_synthetic"].tolist() == [10, 20, 30]
    assert (si["label_s"] > 0).all()
    assert (rounds[rounds["strategy"] != "si"]["n_synthetic"] == 0).all()
    assert {"mse", "rmse_kpa"} <= set(rounds.columns) | set(rounds["metric"])
    labeled = np.load(tmp_path / "run" / "labeled.npz")
    assert labeled["si/repeat0/round3/latents"].shape == (30, 3)
    assert (labeled["si/repeat0/round3"] == -1).all()
