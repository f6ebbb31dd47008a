"""``--imbalance R``: a seeded long-tailed pool (Cao et al. 2019's profile), the same for every strategy
of a run, its class counts in the manifest; ``min_class_labeled`` and ``balanced_accuracy`` in
``rounds.csv``; the report's balanced-accuracy columns and table."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli.main import main
from bench.cli.runner import execute, resume
from bench.report.tables import write_report
from bench.run.config import ConfigError, RunConfig
from bench.run.imbalance import IMBALANCE_STREAM, class_counts, long_tailed_counts, long_tailed_indices
from bench.run.loop import balanced_accuracy, min_class_count
from bench.run.results import MetricInfo, load_labeled
from bench.testing import Blobs
from bench.testing.harness import registered
from strategies.random import RandomSampling
from tasks.base import Capability, Metric, TaskData


def test_three_classes_of_100_at_ratio_10_keep_100_31_and_10_in_the_seeded_order():
    labels = torch.arange(300) % 3
    kept = long_tailed_indices(labels, 10.0, seed=0)
    # floor(100 * 10 ** (-c / 2)) for c = 0, 1, 2: 100, 31 (31.6), 10
    assert list(long_tailed_counts(100, 10.0, 3)) == [100, 31, 10]
    order = np.random.default_rng([0, IMBALANCE_STREAM]).permutation(3)  # the class at each position
    assert list(order) == [0, 2, 1]  # pins the stream: class 0 is the head, class 2 second, class 1 the tail
    assert class_counts(labels[kept]) == {"0": 100, "1": 10, "2": 31}
    assert (np.diff(kept) > 0).all() and kept.dtype == np.int64


def test_n_max_is_the_smallest_class_so_every_class_fills_its_quota():
    labels = np.repeat([7, 3, 5], [120, 100, 150])  # classes 3, 5, 7 with 100, 150, 120 samples
    kept = long_tailed_indices(labels, 4.0, seed=5)
    counts = sorted(class_counts(labels[kept]).values(), reverse=True)
    assert counts == [100, 50, 25]  # 100 * 4 ** (-c / 2): exact, whatever the pool's own balance
    assert sorted(class_counts(labels[long_tailed_indices(labels, 1.0, seed=5)]).values()) == [100, 100, 100]


def test_quotas_the_formula_makes_whole_stay_whole_and_the_tail_keeps_one():
    assert list(long_tailed_counts(100, 8.0, 4)) == [100, 50, 25, 12]  # 8 ** (-1/3) is 0.49999999999999994
    assert list(long_tailed_counts(10, 1e6, 3)) == [10, 1, 1]  # at least one sample a class
    assert list(long_tailed_counts(42, 10.0, 1)) == [42]


def test_the_subset_is_seeded_and_reproducible_and_its_samples_random_within_a_class():
    labels = torch.arange(1000) % 4
    a, b = long_tailed_indices(labels, 10.0, 3), long_tailed_indices(labels, 10.0, 3)
    np.testing.assert_array_equal(a, b)
    other = long_tailed_indices(labels, 10.0, 4)
    assert not np.array_equal(a, other)
    # a class's samples are drawn at random, not its first ones
    of_class = np.flatnonzero(labels.numpy() == 1)
    chosen = np.intersect1d(a, of_class)
    assert 0 < len(chosen) < len(of_class) and not np.array_equal(chosen, of_class[: len(chosen)])


def test_min_class_count_and_balanced_accuracy_by_hand():
    classes = np.array([0, 1, 2])
    assert min_class_count(torch.tensor([0, 0, 2]), classes) == 0
    assert min_class_count(torch.tensor([0, 1, 2, 2, 1, 0, 0]), classes) == 2
    # targets 0,0,0,0,1,2; predictions 0,0,0,0,0,2: recalls 1, 0, 1 -> 2/3; accuracy 5/6
    targets = torch.tensor([0, 0, 0, 0, 1, 2])
    outputs = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 0, 0, 2]), 3).float()
    assert balanced_accuracy(outputs, targets, 100 * 5 / 6) == pytest.approx(100 * 2 / 3)
    assert balanced_accuracy(outputs, targets, 5 / 6) == pytest.approx(2 / 3)  # a task scoring in fractions
    assert balanced_accuracy(torch.nn.functional.one_hot(torch.tensor([1, 1, 1, 1, 2, 0]), 3).float(), targets, 0) == 0


class Spy(RandomSampling):
    """Random sampling that records the pool it was shown."""

    name = "imb-spy"
    seen: list[np.ndarray] = []

    def select(self, context, k):
        Spy.seen.append(context.pool_x.cpu().numpy().copy())
        return super().select(context, k)


class OtherSpy(Spy):
    name = "imb-other-spy"


def test_every_strategy_of_a_run_sees_the_same_long_tailed_pool_and_the_manifest_counts_it(tmp_path, blobs_task):
    Spy.seen = []
    config = RunConfig(
        task="blobs",
        strategies=["imb-spy", "imb-other-spy"],
        repeats=2,
        seed=6,
        imbalance=10.0,
        out=tmp_path / "r",
        quiet=True,
    )
    with registered(Spy, OtherSpy):
        out = execute(config)
    data = blobs_task.load()
    kept = long_tailed_indices(data.pool_y, 10.0, 6)
    expected = data.pool_x[torch.as_tensor(kept)].numpy()
    assert len(Spy.seen) == 2 * 2 * 2 + 2  # two strategies, two repeats, two selections; each plug-in's probe
    for shown in Spy.seen:
        np.testing.assert_array_equal(shown, expected)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["imbalance"] == 10.0
    counts = class_counts(data.pool_y[torch.as_tensor(kept)])
    assert manifest["data"]["class_counts"] == counts
    assert sorted(counts.values()) == [10, 21, 46, 100] and manifest["data"]["pool"] == 177
    assert manifest["data"]["test"] == 200  # the test set whole
    labeled = load_labeled(out / "labeled.npz")
    pool_y = data.pool_y[torch.as_tensor(kept)].numpy()
    rows = pd.read_csv(out / "rounds.csv")
    for row in rows.itertuples():
        sources = labeled[f"{row.strategy}/repeat{row.repeat}/round{row.round}"]
        assert sources.max() < 177
        assert row.min_class_labeled == np.bincount(pool_y[sources], minlength=4).min()
        assert 0 <= row.balanced_accuracy <= 100


def test_rounds_of_a_classifier_always_have_the_class_columns_before_the_validation_ones(tmp_path, blobs_task):
    out = execute(
        RunConfig(task="blobs", strategies=["random"], rounds=2, validation=40, out=tmp_path / "r", quiet=True)
    )
    rows = pd.read_csv(out / "rounds.csv")
    assert list(rows.columns[-4:]) == ["min_class_labeled", "balanced_accuracy", "n_validation", "val_value"]
    # the Blobs test set is balanced (50 a class): the balanced accuracy is the accuracy
    np.testing.assert_allclose(rows["balanced_accuracy"], rows["value"])
    assert "class_counts" not in json.loads((out / "manifest.json").read_text())["data"]


class CrashOnce(RandomSampling):
    """Random sampling that stops the whole run (as a kill would) at its second selection."""

    name = "imb-crash-once"
    calls = 0

    def select(self, context, k):
        CrashOnce.calls += 1
        if CrashOnce.calls == 2:
            raise KeyboardInterrupt("simulated kill")
        return super().select(context, k)


def test_a_resumed_run_keeps_its_pool_and_an_edited_ratio_is_refused(tmp_path, blobs_task):
    def config(out):
        return RunConfig(task="blobs", strategies=["imb-crash-once"], seed=1, imbalance=5.0, out=out, quiet=True)

    with registered(CrashOnce):
        CrashOnce.calls = -100
        execute(config(tmp_path / "whole"))
        CrashOnce.calls = 0
        with pytest.raises(KeyboardInterrupt):
            execute(config(tmp_path / "crashed"))
        path = tmp_path / "crashed" / "manifest.json"
        manifest = json.loads(path.read_text())
        edited = {**manifest, "config": {**manifest["config"], "imbalance": 2.0}}
        path.write_text(json.dumps(edited))
        with pytest.raises(ConfigError, match="config.imbalance"):
            resume(tmp_path / "crashed")
        path.write_text(json.dumps(manifest))
        resume(tmp_path / "crashed")
    a, b = (pd.read_csv(tmp_path / name / "rounds.csv") for name in ("whole", "crashed"))
    columns = ["round", "n_labeled", "value", "min_class_labeled", "balanced_accuracy"]
    pd.testing.assert_frame_equal(a[columns], b[columns])


def test_a_manifest_from_before_imbalance_resumes_without_it():
    config = RunConfig.from_manifest({"task": "mnist", "strategies": ["random"], "validation": 0})
    assert config.imbalance is None


@pytest.mark.parametrize(
    ("task", "ratio", "message"),
    [
        ("blobs", "0.5", "--imbalance 0.5 is below 1"),
        ("blobs", "nan", "--imbalance nan: not a finite number"),
        ("blobs", "inf", "--imbalance inf: not a finite number"),
        ("ivus", "10", "--imbalance applies to classification tasks; ivus is a regression task"),
    ],
)
def test_bad_ratios_and_regression_tasks_are_refused_with_exit_2(task, ratio, message, blobs_task, tmp_path, capsys):
    code = main(["run", "--task", task, "--strategy", "random", "--imbalance", ratio, "--out", str(tmp_path / "r")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_budget_the_long_tailed_pool_cannot_hold_says_to_lower_the_ratio(tmp_path, blobs_task, capsys):
    # 100 + 21 + 4 + 1 = 126 samples at ratio 100; the budget is 120 + 2 * 10 = 140
    flags = ["--imbalance", "100", "--initial", "120", "--out", str(tmp_path / "r")]
    assert main(["run", "--task", "blobs", "--strategy", "random", *flags]) == 2
    err = capsys.readouterr().err
    assert "the blobs pool with --imbalance 100 has only 126" in err and "or lower --imbalance" in err


def rounds_frame(balanced: bool) -> pd.DataFrame:
    """Two strategies, two repeats, two rounds; the balanced columns by hand."""
    rows = []
    for strategy, base in (("random", 50.0), ("other", 60.0)):
        for repeat, seed in ((0, 11), (1, 12)):
            for t, n in ((1, 10), (2, 20)):
                row = dict(task="blobs", strategy=strategy, repeat=repeat, seed=seed, round=t, n_labeled=n)
                row.update(metric="accuracy", value=base + 10 * t + repeat, train_s=0.0, select_s=0.0, label_s=0.0)
                if balanced:
                    row.update(min_class_labeled=t + repeat, balanced_accuracy=base + 5 * t + 2 * repeat)
                rows.append(row)
    return pd.DataFrame(rows)


METRIC = MetricInfo("accuracy", True, "accuracy (%)", 1.0, 1)


def test_the_report_gains_balanced_accuracy_columns_and_a_table(tmp_path):
    write_report(rounds_frame(True), tmp_path, METRIC)
    table = pd.read_csv(tmp_path / "table.csv").set_index(["strategy", "round"])
    # random t=1: balanced 55 and 57 -> mean 56, std sqrt(2); min classes 1 and 2 -> 1.5
    assert table.loc[("random", 1), "bacc_mean"] == pytest.approx(56.0)
    assert table.loc[("random", 1), "bacc_std"] == pytest.approx(math.sqrt(2))
    assert table.loc[("random", 1), "min_class_labeled"] == pytest.approx(1.5)
    assert table.loc[("other", 2), "bacc_mean"] == pytest.approx(71.0)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("strategy")
    # random's balanced AUBC: repeat 0 (55 + 60) / 2 = 57.5, repeat 1 59.5 -> 58.5 ± sqrt(2)
    assert summary.loc["random", "bacc_aubc_mean"] == pytest.approx(58.5)
    assert summary.loc["random", "bacc_aubc_std"] == pytest.approx(math.sqrt(2))
    text = (tmp_path / "table.md").read_text()
    assert "**blobs, balanced accuracy**" in text
    assert "| random | 56.0 ± 1.4 (min 1.5) | 61.0 ± 1.4 (min 2.5) |" in text
    assert "| strategy | AUBC | labels to target | saving vs random | balanced AUBC |" in text


def test_rounds_without_the_columns_report_as_before(tmp_path):
    """The balanced columns and table are all a report adds: without them every file is what it was."""
    write_report(rounds_frame(True), tmp_path / "new", METRIC)
    write_report(rounds_frame(False), tmp_path / "old", METRIC)
    added = ["bacc_mean", "bacc_std", "min_class_labeled", "bacc_aubc_mean", "bacc_aubc_std"]
    for name in ("table.csv", "summary.csv", "differences.csv"):
        new, old = pd.read_csv(tmp_path / "new" / name), pd.read_csv(tmp_path / "old" / name)
        assert not set(added) & set(old.columns), name
        pd.testing.assert_frame_equal(new.drop(columns=[c for c in added if c in new]), old)
    old = (tmp_path / "old" / "table.md").read_text().split("\n\n")
    new = (tmp_path / "new" / "table.md").read_text().split("\n\n")
    at = next(i for i, block in enumerate(new) if block.startswith("**blobs, balanced accuracy**"))
    del new[at : at + 2]  # the balanced table's heading and table
    assert len(new) == len(old) and not any("balanced" in block.lower() for block in old)
    for before, now in zip(old, new):
        if now.startswith("summary over the whole budget"):
            now = now.replace(" Balanced AUBC: the same area of the balanced accuracy (the mean per-class recall).", "")
        elif now.startswith("| strategy | AUBC |"):  # the summary table: the last column is the balanced AUBC
            now = "\n".join(line[: line.rstrip(" |").rindex("|") + 1] if line else line for line in now.split("\n"))
        assert now == before


class Regress(Blobs):
    """Blobs as a regression task: F predicts the first four inputs (no classes, no probabilities)."""

    name = "imb-regress"
    metric = Metric("mse", higher_is_better=False, label="mse")
    capabilities = frozenset({Capability.EMBEDDINGS})

    def load(self, data_root=None, download=True) -> TaskData:
        data = super().load()
        return TaskData(data.pool_x, data.pool_x[:, :4].clone(), data.test_x, data.test_x[:, :4].clone())

    def loss(self, output, target):
        return torch.nn.functional.mse_loss(output, target)

    def scores(self, output, target):
        return {"mse": torch.nn.functional.mse_loss(output, target).item()}


def test_a_regression_task_has_no_class_columns_and_refuses_an_imbalance(tmp_path):
    with registered(Regress):
        out = execute(RunConfig(task="imb-regress", strategies=["random"], rounds=2, out=tmp_path / "r", quiet=True))
        with pytest.raises(ConfigError, match="imb-regress is a regression task"):
            execute(RunConfig(task="imb-regress", strategies=["random"], imbalance=2.0, out=tmp_path / "i"))
    rows = pd.read_csv(out / "rounds.csv")
    assert len(rows) == 2 and not {"min_class_labeled", "balanced_accuracy"} & set(rows.columns)
    assert "bacc_mean" not in pd.read_csv(out / "table.csv") and "balanced" not in (out / "table.md").read_text()


def test_runs_with_other_ratios_are_not_reported_together_and_older_runs_had_none():
    from bench.report.tables import trained_with

    older = trained_with({"config": {"task": "mnist", "validation": 0}})
    assert older["imbalance"] is None
    assert trained_with({"config": {"task": "mnist", "imbalance": None}})["imbalance"] is None
    assert trained_with({"config": {"task": "mnist", "imbalance": 10.0}})["imbalance"] == 10.0
