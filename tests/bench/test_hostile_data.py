"""Hostile data: non-finite values in a task's data are refused (exit 2, naming the task, split,
count and first sample) before any work, instead of being scored or trained on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli.main import main
from bench.testing import Blobs, registered
from tasks.base import DataError, TaskData


def data(n: int = 6) -> TaskData:
    """A tiny clean data set: float inputs [n, 2, 3] and float targets [n, 3] (a regression)."""
    x = torch.rand(n, 2, 3, generator=torch.Generator().manual_seed(0))
    return TaskData(x, x[:, 0].clone(), x.clone(), x[:, 1].clone(), source="/data/tiny")


@pytest.mark.parametrize(
    ("split", "field", "value"),
    [
        ("pool inputs", "pool_x", float("nan")),
        ("test inputs", "test_x", float("inf")),
        ("test inputs", "test_x", float("-inf")),
        ("pool targets", "pool_y", float("nan")),
        ("test targets", "test_y", float("inf")),
    ],
)
def test_non_finite_values_are_refused_naming_the_split_count_and_first_sample(split, field, value):
    clean = data()
    tensor = getattr(clean, field)
    tensor[4].view(-1)[0] = value
    tensor[2].view(-1)[:2] = value
    with pytest.raises(DataError) as refused:
        clean.check_finite("tiny")
    message = str(refused.value)
    assert message.startswith("the tiny data (/data/tiny): ")
    assert f"the {split} hold non-finite values (NaN or infinity): 3 in 2 of 6 samples" in message
    assert message.endswith("the first in sample 2; fix or remove those samples")


def test_finite_float_uint8_int64_and_empty_data_pass():
    data().check_finite("tiny")
    images = torch.full((4, 1, 2, 2), 255, dtype=torch.uint8)
    TaskData(images, torch.arange(4), images[:0], torch.arange(0)).check_finite("tiny")


def test_float16_values_are_checked():
    half = data()
    half = TaskData(half.pool_x.half(), half.pool_y, half.test_x.half(), half.test_y)
    half.test_x[5, 1, 2] = float("nan")
    with pytest.raises(DataError, match=r": 1 in 1 of 6 samples, the first in sample 5;"):
        half.check_finite("tiny")


class NaNTestInputs(Blobs):
    """Blobs whose first 50 of 200 test inputs are NaN (scored as an accuracy before)."""

    name = "blobs-nan-test"

    def load(self, data_root: Path | None = None, download: bool = True) -> TaskData:
        loaded = super().load(data_root, download)
        loaded.test_x[:50] = float("nan")
        return loaded


class NaNPool(Blobs):
    """Blobs whose whole pool is NaN (every unit failed as diverged training before)."""

    name = "blobs-nan-pool"

    def load(self, data_root: Path | None = None, download: bool = True) -> TaskData:
        loaded = super().load(data_root, download)
        loaded.pool_x[:] = float("nan")
        return loaded


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (NaNTestInputs, "the test inputs hold non-finite values (NaN or infinity): 400 in 50 of 200 samples"),
        (NaNPool, "the pool inputs hold non-finite values (NaN or infinity): 3200 in 400 of 400 samples"),
    ],
)
def test_a_run_on_non_finite_data_exits_2_before_any_work(capsys, tmp_path, task, expected):
    out = tmp_path / "run"
    with registered(task):
        code = main(
            ["run", "--task", task.name, "--strategy", "random", "--rounds", "2", "--quiet"]
            + ["--threads", "1", "--out", str(out)]
        )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: the {task.name} data: {expected}, the first in sample 0" in err
    assert "Traceback" not in err
    assert not out.exists()
