"""Figures: task samples (Fig. S1), SI-synthesized samples, SNN trajectories (Fig. 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.cli.main import main
from bench.report.figures import pairs_figure, trajectories
from tasks.base import TaskData
from tests.strategies.test_snn import POOL, Grid, Identity, PushRight, index_of


def test_trajectories_walk_towards_higher_loss_without_revisiting():
    data = TaskData(POOL, torch.ones(len(POOL), dtype=torch.long), POOL[:1], torch.ones(1, dtype=torch.long))
    starts = np.array([index_of(0, 2), index_of(0, 7)])
    paths = trajectories(
        Grid(), data, Identity(), PushRight(), starts, steps=4, alpha=1.0, rng=np.random.default_rng(0)
    )
    assert paths == [[index_of(i, 2) for i in range(5)], [index_of(i, 7) for i in range(5)]]
    visited = [i for path in paths for i in path]
    assert len(set(visited)) == len(visited)


def test_pairs_figure_draws_maps_beside_inputs(tmp_path):
    from tasks.ivus import IVUSTask

    masks = torch.zeros(3, 1, 64, 64)
    masks[:, :, 20:40, 20:40] = 1
    path = pairs_figure(IVUSTask(), masks, masks * 0.3, tmp_path / "f.png", "test")
    assert path.stat().st_size > 0


@pytest.mark.slow
def test_show_saves_ivus_samples(tmp_path, capsys):
    out = tmp_path / "ivus.png"
    assert main(["show", "--task", "ivus", "--n", "3", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and str(out) in capsys.readouterr().out


def test_show_synthesized_is_refused_for_tasks_without_a_labeler(tmp_path, capsys, mnist_root):
    code = main(
        ["show", "--task", "mnist", "--synthesized", "--data-root", str(mnist_root), "--out", str(tmp_path / "x.png")]
    )
    assert code == 2 and "labeler for synthetic inputs" in capsys.readouterr().err


@pytest.mark.slow
def test_trajectory_figure_on_mnist(tmp_path, mnist_root):
    out = tmp_path / "traj.png"
    assert (
        main(
            [
                "trajectories",
                "--task",
                "mnist",
                "--data-root",
                str(mnist_root),
                "--subset",
                "3000",
                "--initial",
                "200",
                "--paths",
                "3",
                "--steps",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 0


def test_uint8_images_are_drawn_in_unit_range():
    from bench.report.figures import _image

    image = torch.tensor([[[0, 255], [51, 102]]] * 3, dtype=torch.uint8)  # [3, 2, 2]
    drawn = _image(image)
    assert drawn.shape == (2, 2, 3) and drawn.max() == 1.0 and np.isclose(drawn[1, 0, 0], 0.2)
