"""``--validation N``: a labeled split per repeat that no strategy sees or picks, nothing trains on,
and every round scores; the same for every strategy of a repeat, and kept by a resumed run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli.main import main
from bench.cli.runner import execute, resume
from bench.run.config import RunConfig
from bench.run.loop import initial_indices, repeat_seed
from bench.run.results import load_labeled
from bench.run.validation import HeldOut, validation_indices
from bench.testing import Blobs
from bench.testing.harness import registered
from strategies.random import RandomSampling
from tasks.base import TaskData

POOL = Blobs.pool_size


def test_the_split_is_seeded_sorted_in_the_pool_and_apart_from_the_initial_set():
    a, b = validation_indices(7, 1000, 50), validation_indices(7, 1000, 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, validation_indices(8, 1000, 50))
    assert len(np.unique(a)) == 50 and (np.diff(a) > 0).all() and a.min() >= 0 and a.max() < 1000
    initial = initial_indices(7, 1000, 900, a)  # 950 left: the draw must avoid every validation sample
    assert not np.intersect1d(initial, a).size and len(np.unique(initial)) == 900


def test_without_validation_the_initial_set_is_the_one_drawn_before():
    expected = np.random.default_rng(11).choice(500, size=20, replace=False)
    np.testing.assert_array_equal(initial_indices(11, 500, 20), expected)
    np.testing.assert_array_equal(initial_indices(11, 500, 20, np.empty(0, np.int64)), expected)


def test_the_strategies_pool_leaves_out_the_validation_samples_and_maps_back():
    data = TaskData(torch.arange(10.0)[:, None], torch.arange(10), torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64))
    held = HeldOut.draw(data, seed=3, n=4)
    assert HeldOut.draw(data, seed=3, n=0) is None
    rows = np.arange(6)
    pool = held.to_pool(rows)
    assert sorted([*pool, *held.indices]) == list(range(10))
    np.testing.assert_array_equal(held.pool_x[:, 0].numpy(), pool.astype(np.float32))  # row i is sample pool[i]
    np.testing.assert_array_equal(held.to_rows(pool), rows)
    np.testing.assert_array_equal(held.y.numpy(), held.indices)


class Spy(RandomSampling):
    """Random sampling that records every pool input it was shown, per repeat (by the repeat's
    initial draw: the context carries no repeat number)."""

    name = "spy"
    seen: dict[str, list[np.ndarray]] = {}

    def select(self, context, k):
        Spy.seen.setdefault(type(self).name, []).append(context.pool_x.cpu().numpy().copy())
        return super().select(context, k)


class OtherSpy(Spy):
    name = "other-spy"


@pytest.fixture
def spies():
    Spy.seen = {}
    with registered(Spy, OtherSpy):
        yield


def test_no_strategy_sees_or_picks_a_validation_sample_and_every_strategy_shares_them(tmp_path, blobs_task, spies):
    strategies = ["spy", "other-spy", "coreset", "uncertainty", "badge", "snn", "typiclust"]
    settings = dict(repeats=2, seed=4, rounds=3, validation=60, out=tmp_path / "run", quiet=True)
    config = RunConfig(task="blobs", strategies=strategies, **settings)
    out = execute(config)
    data = blobs_task.load()
    pool_x = data.pool_x.numpy()
    labeled = load_labeled(out / "labeled.npz")
    rows = pd.read_csv(out / "rounds.csv")
    for repeat in range(2):
        held = validation_indices(repeat_seed(4, repeat), POOL, 60)
        for name in strategies:
            for t in range(1, 4):
                sources = labeled[f"{name}/repeat{repeat}/round{t}"]
                assert not np.intersect1d(sources[sources >= 0], held).size, (name, repeat, t)
    # the spies were shown exactly the pool without their repeat's validation samples, the same for both
    assert len(Spy.seen["spy"]) == len(Spy.seen["other-spy"]) == 2 * 2 + 1  # + the plug-in probe's selection
    for shown, other in zip(Spy.seen["spy"], Spy.seen["other-spy"]):
        np.testing.assert_array_equal(shown, other)
        assert len(shown) == POOL - 60
    expected = [np.delete(pool_x, validation_indices(repeat_seed(4, r), POOL, 60), axis=0) for r in range(2)]
    for shown in Spy.seen["spy"]:
        assert any(np.array_equal(shown, e) for e in expected)
    assert (rows["n_validation"] == 60).all() and rows["val_value"].notna().all()
    assert rows["val_value"].between(0, 100).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["validation"] == 60


def test_validation_columns_come_last_and_hold_the_metric_on_n_samples(tmp_path, blobs_task):
    """n_validation and val_value follow the task's columns; the accuracy of 100 samples is a whole percent."""
    settings = dict(rounds=2, validation=100, epochs=1, out=tmp_path / "r", quiet=True)
    out = execute(RunConfig(task="blobs", strategies=["random"], **settings))
    rows = pd.read_csv(out / "rounds.csv")
    assert set(rows.columns) >= {"n_validation", "val_value"}
    assert list(rows.columns[-2:]) == ["n_validation", "val_value"]
    # 100 samples: accuracy in whole percent
    assert np.allclose(rows["val_value"], rows["val_value"].round())


class CrashOnce(RandomSampling):
    """Random sampling that stops the whole run (as a kill would) at its third selection."""

    name = "crash-once"
    calls = 0

    def select(self, context, k):
        CrashOnce.calls += 1
        if CrashOnce.calls == 3:
            raise KeyboardInterrupt("simulated kill")
        return super().select(context, k)


def test_a_resumed_run_keeps_its_validation_split(tmp_path, blobs_task):
    def config(out):
        settings = dict(repeats=2, seed=2, rounds=4, validation=50, out=out, quiet=True)
        return RunConfig(task="blobs", strategies=["crash-once"], **settings)

    with registered(CrashOnce):
        CrashOnce.calls = -100
        execute(config(tmp_path / "reference"))
        CrashOnce.calls = 0
        with pytest.raises(KeyboardInterrupt):
            execute(config(tmp_path / "crashed"))
        resume(tmp_path / "crashed")
    keys = ["strategy", "repeat", "round"]
    a, b = (pd.read_csv(tmp_path / name / "rounds.csv").sort_values(keys) for name in ("reference", "crashed"))
    columns = [*keys, "n_labeled", "value", "n_validation", "val_value"]
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True))
    la, lb = load_labeled(tmp_path / "reference" / "labeled.npz"), load_labeled(tmp_path / "crashed" / "labeled.npz")
    for key in la:
        np.testing.assert_array_equal(la[key], lb[key], err_msg=key)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--validation", "-1"], "must be 0 or more"),
        (["--validation", "390"], "20 + (3 - 1) * 10 = 40 labeled samples + 390 validation samples = 430"),
    ],
)
def test_impossible_validation_sizes_are_refused(flags, message, blobs_task, tmp_path, capsys):
    try:
        code = main(["run", "--task", "blobs", "--strategy", "random", "--out", str(tmp_path / "r"), *flags])
    except SystemExit as exit_info:  # refused by the argument parser
        code = exit_info.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
