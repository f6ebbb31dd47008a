"""Selection diagnostics: what they measure, that they change no result, and their report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as nnf

from bench.cli.runner import execute
from bench.report.hardness import hardness_table
from bench.report.tables import read_rounds, write_report
from bench.run.config import RunConfig
from bench.run.diagnostics import COLUMNS, POOL_SAMPLE, class_balance, diagnose, nearest_distance, pool_sample
from bench.run.results import MetricInfo, RoundRecord, RoundsWriter
from bench.testing import Blobs


def test_class_balance_is_one_for_even_classes_and_zero_for_one():
    assert class_balance(torch.arange(40) % 4, 4) == pytest.approx(1.0)
    assert class_balance(torch.zeros(40, dtype=torch.int64), 4) == 0.0
    assert class_balance(torch.tensor([0, 0, 0, 1]), 2) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    )


def test_nearest_distance_matches_the_brute_force_across_blocks():
    generator = torch.Generator().manual_seed(0)
    queries, references = torch.randn(50, 3, generator=generator), torch.randn(20, 3, generator=generator)
    expected = torch.cdist(queries.double(), references.double()).amin(1)
    torch.testing.assert_close(nearest_distance(queries, references, block=7), expected)


def test_the_pool_sample_is_fixed_per_seed_and_the_whole_of_a_small_pool():
    np.testing.assert_array_equal(pool_sample(1, 100), np.arange(100))
    big = pool_sample(1, 60_000)
    assert len(big) == POOL_SAMPLE and len(np.unique(big)) == POOL_SAMPLE and (np.diff(big) > 0).all()
    np.testing.assert_array_equal(big, pool_sample(1, 60_000))
    assert not np.array_equal(big, pool_sample(2, 60_000))


def test_diagnose_measures_the_picks_against_the_unlabeled_pool():
    task = Blobs()
    data = task.load()
    torch.manual_seed(0)
    model = task.make_model()
    labeled, picks = np.arange(20), np.arange(20, 30)
    result = diagnose(
        task,
        model,
        data.pool_x,
        data.pool_y,
        labeled,
        data.pool_x[labeled],
        data.pool_x[picks],
        data.pool_y[picks],
        seed=0,
    )
    model.eval()
    with torch.no_grad():
        assert result.pick_loss == pytest.approx(
            nnf.cross_entropy(model(data.pool_x[picks]), data.pool_y[picks]).item()
        )
        rest = torch.arange(20, len(data.pool_x))  # the unlabeled pool: the picks are not labeled yet
        assert result.pool_loss == pytest.approx(nnf.cross_entropy(model(data.pool_x[rest]), data.pool_y[rest]).item())
        seen = model.embed(data.pool_x[labeled])
        ratio = (
            nearest_distance(model.embed(data.pool_x[picks]), seen).mean()
            / nearest_distance(model.embed(data.pool_x[rest]), seen).mean()
        )
    assert result.pick_novelty == pytest.approx(ratio.item())
    assert result.pick_balance == pytest.approx(class_balance(data.pool_y[picks], 4))
    assert model.training is False  # left as it was


def blobs_run(tmp_path, name: str, **overrides):
    values = dict(
        task="blobs",
        strategies=["random", "uncertainty", "si"],
        repeats=2,
        seed=2,
        rounds=4,
        out=tmp_path / name,
        quiet=True,
        threads=1,
    )
    values.update(overrides)
    return execute(RunConfig(**values))


def test_diagnostics_change_no_result_and_fill_every_round_after_the_first(tmp_path, blobs_task):
    on = pd.read_csv(blobs_run(tmp_path, "on") / "rounds.csv")
    off = pd.read_csv(blobs_run(tmp_path, "off", diagnostics=False) / "rounds.csv")
    pd.testing.assert_series_equal(on["value"], off["value"], check_exact=True)
    pd.testing.assert_series_equal(on["n_synthetic"], off["n_synthetic"])
    first = on["round"] == 1
    assert on.loc[first, list(COLUMNS)].isna().all().all() and (on.loc[first, "diagnose_s"] == 0).all()
    later = on[~first]
    assert later[list(COLUMNS)].notna().all().all() and (later["diagnose_s"] > 0).all()
    assert off[list(COLUMNS)].isna().all().all() and (off["diagnose_s"] == 0).all()
    assert ((later["pick_balance"] >= 0) & (later["pick_balance"] <= 1)).all()
    hardness = hardness_table(on).groupby("strategy")["hardness_mean"].mean()
    assert hardness["uncertainty"] > max(1.0, hardness["random"])  # picks at the boundary are harder than chance


def test_the_report_shows_hardness_only_for_runs_that_measured_it(tmp_path, blobs_task):
    measured = blobs_run(tmp_path, "on", strategies=["random", "uncertainty"])
    text = (measured / "table.md").read_text()
    assert "hardness of the picks" in text and (measured / "hardness.png").exists()
    table = pd.read_csv(measured / "hardness.csv")
    assert set(table["strategy"]) == {"random", "uncertainty"} and sorted(table["round"].unique()) == [2, 3, 4]
    assert table["description"].str.contains("pick_loss / pool_loss").all()  # the file says what it holds
    unmeasured = blobs_run(tmp_path, "off", strategies=["random"], diagnostics=False)
    assert "hardness" not in (unmeasured / "table.md").read_text() and not (unmeasured / "hardness.csv").exists()


def test_the_report_labels_runs_of_one_strategy_with_other_settings(tmp_path, blobs_task):
    default = blobs_run(tmp_path, "default", strategies=["random", "si"], rounds=2)
    pool = blobs_run(tmp_path, "pool", strategies=["si"], rounds=2, strategy_options={"si.start": "pool"})
    wide = blobs_run(tmp_path, "wide", strategies=["si"], rounds=2, latent_dim=3)
    rounds = read_rounds([default, pool, wide])
    assert list(dict.fromkeys(rounds["strategy"])) == ["random", "si", "si (start=pool)", "si (latent_dim=3)"]
    assert "| si (start=pool) |" in (pool / "table.md").read_text()  # a run's own report names its settings too
    paths = write_report(rounds, tmp_path / "report", MetricInfo.of(Blobs.metric))
    differences = pd.read_csv(tmp_path / "report" / "differences.csv")
    assert {"si", "si (start=pool)", "si (latent_dim=3)"} == set(differences["strategy"])  # paired with random
    assert tmp_path / "report" / "hardness.csv" in paths
    # SI from the pool trains on the same real initial set as random: the same round-1 value
    first = rounds[rounds["round"] == 1].set_index(["strategy", "repeat"])["value"]
    assert (first["si (start=pool)"] == first["random"]).all()


def test_a_resumed_run_from_before_diagnostics_keeps_its_columns(tmp_path):
    path = tmp_path / "rounds.csv"
    old = (
        "task,strategy,repeat,seed,round,n_labeled,metric,value,train_s,select_s,label_s,eval_s,"
        "n_synthetic,n_rejected\n"
    )
    path.write_text(old)
    record = RoundRecord(
        "t", "random", 0, 1, 2, 20, "accuracy", 50.0, 0.1, 0.0, 0.0, 0.1, diagnostics=dict.fromkeys(COLUMNS, math.nan)
    )
    with RoundsWriter(path, []) as writer:
        writer.write(record)
    rows = pd.read_csv(path)
    assert list(rows.columns) == old.strip().split(",") and rows["value"].tolist() == [50.0]
    saved = json.loads(json.dumps({"task": "t", "strategies": ["random"], "data_root": "."}))
    assert RunConfig.from_manifest(saved).diagnostics is False  # such a run has no columns for them


def test_a_checkpoint_from_before_diagnostics_resumes(tmp_path, blobs_task):
    from bench.run import checkpoint
    from bench.run.loop import run_progressive
    from bench.run.plan import load_data, plan_run
    from strategies import STRATEGIES

    plan = plan_run(RunConfig(task="blobs", strategies=["random"], rounds=3, seed=4, quiet=True))
    data = load_data(plan)
    rows, states = [], {}
    run_progressive(
        plan,
        data,
        STRATEGIES.get("random"),
        0,
        lambda record, *_: rows.append(record.row()),
        on_checkpoint=lambda t, state: states.setdefault(t, checkpoint.to_bytes(state)),
    )
    old = checkpoint.from_bytes(states[1])  # as the harness writes and reads it
    del old["diagnostics"]
    old["pending_seconds"] = {k: v for k, v in old["pending_seconds"].items() if k != "diagnose"}
    resumed = []
    run_progressive(
        plan, data, STRATEGIES.get("random"), 0, lambda record, *_: resumed.append(record.row()), resume=old
    )
    assert [r["value"] for r in resumed] == [r["value"] for r in rows[1:]]
    assert math.isnan(resumed[0]["pick_loss"]) and not math.isnan(resumed[1]["pick_loss"])
