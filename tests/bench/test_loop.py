"""The progressive protocol: seeding, the paired design, the strategy contract, outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli.runner import execute
from bench.run.config import ConfigError, RunConfig, resolve_device
from bench.run.loop import fresh_weights, initial_indices, initial_weights, repeat_seed
from bench.run.plan import plan_run
from bench.run.results import ROUND_COLUMNS, load_labeled
from bench.testing import Blobs
from strategies import STRATEGIES
from strategies.base import Selection, SelectionError, Strategy
from tasks import TASKS
from tasks.base import Protocol


def blobs_config(tmp_path, name="run", **overrides) -> RunConfig:
    values = dict(task="blobs", strategies=["random"], repeats=2, seed=7, out=tmp_path / name, quiet=True)
    values.update(overrides)
    return RunConfig(**values)


class LowestIndices(Strategy):
    name = "lowest"
    description = "the k lowest unlabeled pool indices (tests only)"

    def select(self, context, k):
        return Selection(indices=context.unlabeled[:k])


class Broken(Strategy):
    name = "broken"
    description = "re-picks labeled samples (tests only)"

    def select(self, context, k):
        return Selection(indices=context.labeled[:k])


class GivesUp(Strategy):
    name = "gives-up"
    description = "cannot fill a round (tests only)"

    def select(self, context, k):
        raise SelectionError("every candidate was rejected")


@pytest.fixture
def extra_strategies():
    for cls in (LowestIndices, Broken, GivesUp):
        STRATEGIES.add(cls.name, cls)
    yield
    for cls in (LowestIndices, Broken, GivesUp):
        STRATEGIES.remove(cls.name)


def test_repeat_seeds_are_stable_and_distinct():
    seeds = [repeat_seed(0, r) for r in range(5)]
    assert seeds == [repeat_seed(0, r) for r in range(5)]
    assert len(set(seeds)) == 5
    assert repeat_seed(1, 0) != repeat_seed(0, 0)


def test_same_command_twice_gives_identical_metric_values(tmp_path, blobs_task):
    first = pd.read_csv(execute(blobs_config(tmp_path, "a")) / "rounds.csv")
    second = pd.read_csv(execute(blobs_config(tmp_path, "b")) / "rounds.csv")
    assert first["value"].tolist() == second["value"].tolist()
    assert first["seed"].tolist() == second["seed"].tolist()
    other = pd.read_csv(execute(blobs_config(tmp_path, "c", seed=8)) / "rounds.csv")
    assert other["seed"].tolist() != first["seed"].tolist()


def test_rounds_csv_has_the_documented_columns_and_sizes(tmp_path, blobs_task):
    out = execute(blobs_config(tmp_path))
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds.columns[: len(ROUND_COLUMNS)]) == ROUND_COLUMNS
    assert len(rounds) == 2 * 3  # repeats x rounds
    assert rounds["n_labeled"].tolist() == [20, 30, 40] * 2
    assert set(rounds["metric"]) == {"accuracy"}
    assert (rounds[["train_s", "select_s", "label_s"]] >= 0).all().all()


def test_every_strategy_starts_from_the_same_initial_set_and_weights(tmp_path, blobs_task, extra_strategies):
    out = execute(blobs_config(tmp_path, strategies=["random", "lowest"], rounds=2))
    rounds = pd.read_csv(out / "rounds.csv")
    first = rounds[rounds["round"] == 1].pivot(index="repeat", columns="strategy", values="value")
    # same initial set, weights, optimizer and shuffling -> identical round-1 models
    assert (first["random"] == first["lowest"]).all()
    labeled = load_labeled(out / "labeled.npz")
    for r, seed in enumerate(rounds.drop_duplicates("repeat")["seed"]):
        expected = initial_indices(seed, 400, 20)
        np.testing.assert_array_equal(labeled[f"random/repeat{r}/round1"], expected)
        np.testing.assert_array_equal(labeled[f"lowest/repeat{r}/round1"], expected)
    assert not np.array_equal(labeled["random/repeat0/round1"], labeled["random/repeat1/round1"])


def test_labeled_sets_grow_by_the_strategys_picks(tmp_path, blobs_task, extra_strategies):
    out = execute(blobs_config(tmp_path, strategies=["lowest"], repeats=1))
    labeled = load_labeled(out / "labeled.npz")
    r1, r2, r3 = (labeled[f"lowest/repeat0/round{t}"] for t in (1, 2, 3))
    np.testing.assert_array_equal(r2[:20], r1)
    added = r2[20:]
    assert len(added) == 10 and not set(added) & set(r1)
    np.testing.assert_array_equal(added, np.sort(np.setdiff1d(np.arange(400), r1))[:10])
    assert len(r3) == 40 and len(set(r3)) == 40


def test_a_strategy_that_breaks_the_contract_fails_its_units_with_the_traceback(tmp_path, blobs_task, extra_strategies):
    out = execute(blobs_config(tmp_path, strategies=["broken", "random"]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete with failures"
    assert [(f["strategy"], f["repeat"], f["rounds_done"]) for f in manifest["failures"]] == [
        ("broken", 0, 1),
        ("broken", 1, 1),
    ]
    assert "already-labeled" in manifest["failures"][0]["error"]
    assert "StrategyError" in manifest["failures"][0]["traceback"] and "loop.py" in manifest["failures"][0]["traceback"]
    assert manifest["units"]["broken-r0"]["status"] == "failed"
    rounds = pd.read_csv(out / "rounds.csv")
    assert (rounds["strategy"] == "random").sum() == 6  # the other units finished
    assert set(load_labeled(out / "labeled.npz")) >= {f"random/repeat0/round{t}" for t in (1, 2, 3)}


def test_a_strategy_that_cannot_fill_a_round_is_stopped_and_the_run_goes_on(tmp_path, blobs_task, extra_strategies):
    out = execute(blobs_config(tmp_path, strategies=["gives-up", "random"]))
    rounds = pd.read_csv(out / "rounds.csv")
    assert (rounds["strategy"] == "gives-up").sum() == 2  # round 1 of each repeat, then it gave up
    assert (rounds["strategy"] == "random").sum() == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete with failures"
    failure = manifest["failures"][0]
    assert (failure["strategy"], failure["repeat"], failure["rounds_done"]) == ("gives-up", 0, 1)
    assert failure["error"] == "SelectionError: every candidate was rejected"


def starts_of_training(monkeypatch) -> list[tuple[str, dict, torch.optim.Optimizer]]:
    """Records (strategy, F's weights, optimizer) at the start of every round's training."""
    import bench.run.loop

    seen, train = [], bench.run.loop.train_epochs

    def spy(model, optimizer, *args, **kwargs):
        seen.append(({k: v.clone() for k, v in model.state_dict().items()}, optimizer))
        return train(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(bench.run.loop, "train_epochs", spy)
    return seen


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("start", ["warm", "reset", "fresh"])
def test_start_modes(tmp_path, blobs_task, monkeypatch, start):
    seen = starts_of_training(monkeypatch)
    out = execute(blobs_config(tmp_path, start, repeats=1, strategies=["random", "uncertainty"], start=start))
    (r1, _), (r2, _), (r3, _), (u1, _), (u2, _), _ = seen  # random's 3 rounds, then uncertainty's
    initial = initial_weights(blobs_task, repeat_seed(7, 0))
    assert same_weights(r1, initial) and same_weights(u1, initial)  # round 1: the repeat's shared weights
    if start == "warm":
        assert not same_weights(r2, initial)
    elif start == "reset":
        assert same_weights(r2, initial) and same_weights(r3, initial)
    else:
        assert same_weights(r2, fresh_weights(blobs_task, repeat_seed(7, 0), 2)) and same_weights(u2, r2)
        assert not same_weights(r2, initial) and not same_weights(r3, r2)
    assert json.loads((out / "manifest.json").read_text())["protocol"]["start"] == start


class SGDBlobs(Blobs):
    """Blobs with another recipe: SGD with momentum, a fresh net every round."""

    name = "sgd-blobs"
    protocol = Protocol(
        initial=20,
        increment=10,
        rounds=3,
        epochs=2,
        batch_size=16,
        lr=0.05,
        optimizer="sgd",
        optimizer_options={"momentum": 0.5},
        start="fresh",
    )


@pytest.fixture
def sgd_blobs():
    with TASKS.scoped():
        TASKS.add(SGDBlobs.name, SGDBlobs)
        yield SGDBlobs()


def test_a_task_declares_its_training_recipe_and_flags_override_it(tmp_path, sgd_blobs, monkeypatch):
    seen = starts_of_training(monkeypatch)
    out = execute(blobs_config(tmp_path, "sgd", task="sgd-blobs", repeats=1))
    optimizers = [optimizer for _, optimizer in seen]
    assert all(
        type(o) is torch.optim.SGD and o.defaults["momentum"] == 0.5 and o.defaults["lr"] == 0.05 for o in optimizers
    )
    assert len({id(o) for o in optimizers}) == 3  # a fresh net gets a fresh optimizer every round
    protocol = json.loads((out / "manifest.json").read_text())["protocol"]
    assert (protocol["optimizer"], protocol["optimizer_options"], protocol["start"]) == (
        "sgd",
        {"momentum": 0.5},
        "fresh",
    )

    seen.clear()
    execute(
        blobs_config(
            tmp_path, "sgd-more", task="sgd-blobs", repeats=1, optimizer_options={"momentum": 0.9, "nesterov": True}
        )
    )
    assert seen[0][1].defaults["momentum"] == 0.9 and seen[0][1].defaults["nesterov"] is True
    seen.clear()
    out = execute(blobs_config(tmp_path, "adam", task="sgd-blobs", repeats=1, optimizer="AdamW", start="warm"))
    assert type(seen[0][1]) is torch.optim.AdamW and len({id(o) for _, o in seen}) == 1  # momentum dropped
    protocol = json.loads((out / "manifest.json").read_text())["protocol"]
    assert (protocol["optimizer"], protocol["optimizer_options"], protocol["start"]) == ("AdamW", {}, "warm")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer": "adamm"}, "unknown optimizer 'adamm'; torch.optim has .*adam"),
        ({"optimizer_options": {"momentun": 0.5}}, "momentun"),
        ({"optimizer": "sgd", "optimizer_options": {"momentum": -1}}, "momentum"),
        ({"start": "cold"}, "unknown start mode 'cold'"),
        ({"lr": float("nan")}, "--lr must be positive, finite"),
    ],
)
def test_a_bad_recipe_is_refused_before_any_work(tmp_path, blobs_task, overrides, message):
    with pytest.raises(ConfigError, match=message):
        plan_run(blobs_config(tmp_path, **overrides))


def test_outputs_and_manifest(tmp_path, blobs_task):
    out = execute(blobs_config(tmp_path))
    for name in ("rounds.csv", "table.csv", "table.md", "curves.png", "labeled.npz", "manifest.json"):
        assert (out / name).stat().st_size > 0, name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["started"] <= manifest["finished"]
    assert manifest["repeat_seeds"] == [repeat_seed(7, 0), repeat_seed(7, 1)]
    assert manifest["protocol"]["initial"] == 20
    assert (manifest["protocol"]["optimizer"], manifest["protocol"]["start"]) == ("adam", "warm")
    provided = manifest["provided_by"]
    assert provided["strategies"]["random"]["module"] == "strategies.random"
    assert provided["strategies"]["random"]["distribution"] == "latent-bench"
    assert provided["strategies"]["random"]["version"]
    assert provided["task"]["module"] == "bench.testing.blobs"
    assert manifest["device"]["device"] == str(resolve_device("auto"))
    assert manifest["versions"]["torch"]
    assert "commit" in (manifest["git"] or {"commit": None})
    table = pd.read_csv(out / "table.csv")
    assert list(table.columns) == [
        "strategy",
        "round",
        "n_labeled",
        "mean",
        "std",
        "repeats",
        "bacc_mean",  # a classifier scored by accuracy: its balanced accuracy, and the smallest labeled class
        "bacc_std",
        "min_class_labeled",
        "metric_name",
        "metric_higher_is_better",
        "metric_label",
        "metric_display_scale",
        "metric_decimals",
    ]
    assert manifest["metric"] == {
        "name": "accuracy",
        "higher_is_better": True,
        "label": "accuracy (%)",
        "display_scale": 1.0,
        "decimals": 1,
    }
    assert (table["repeats"] == 2).all()


def test_an_existing_run_folder_is_not_overwritten(tmp_path, blobs_task):
    from bench.run.config import ConfigError

    execute(blobs_config(tmp_path))
    with pytest.raises(ConfigError, match="already holds a run"):
        execute(blobs_config(tmp_path))


def test_bfloat16_training_is_recorded_and_reproducible(tmp_path, blobs_task):
    exact = pd.read_csv(execute(blobs_config(tmp_path, "fp32", repeats=1)) / "rounds.csv")
    half = pd.read_csv(execute(blobs_config(tmp_path, "bf16", repeats=1, train_dtype="bfloat16")) / "rounds.csv")
    again = pd.read_csv(execute(blobs_config(tmp_path, "bf16-again", repeats=1, train_dtype="bfloat16")) / "rounds.csv")
    assert half["value"].tolist() == again["value"].tolist()
    assert json.loads((tmp_path / "bf16" / "manifest.json").read_text())["device"]["train_dtype"] == "bfloat16"
    assert json.loads((tmp_path / "fp32" / "manifest.json").read_text())["device"]["train_dtype"] == "float32"
    assert half["value"].between(0, 100).all() and len(half) == len(exact)


class FailsAtOnce(Strategy):
    name = "fails-at-once"
    description = "cannot even pick its initial set (tests only)"

    def initial(self, context, k):
        raise SelectionError("no initial set")

    def select(self, context, k):
        raise AssertionError("never reached")


def test_a_run_in_which_no_unit_finishes_a_round_still_ends(tmp_path, blobs_task):
    STRATEGIES.add(FailsAtOnce.name, FailsAtOnce)
    try:
        out = execute(blobs_config(tmp_path, strategies=["fails-at-once"], repeats=1))
    finally:
        STRATEGIES.remove(FailsAtOnce.name)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete with failures" and manifest["failures"][0]["rounds_done"] == 0
    assert not (out / "table.md").exists()


def test_labeled_npz_keeps_what_each_pick_was_ranked_by(tmp_path, blobs_task):
    out = execute(blobs_config(tmp_path, strategies=["uncertainty", "random"], repeats=1))
    labeled = load_labeled(out / "labeled.npz")
    scores, picks = labeled["uncertainty/repeat0/round3/scores"], labeled["uncertainty/repeat0/round3"]
    assert scores.shape == picks.shape == (40,)
    assert np.isnan(scores[:20]).all()  # the shared random initial set was ranked by nothing
    for added in (scores[20:30], scores[30:40]):  # entropies, in pick order: highest first
        assert np.isfinite(added).all() and (added > 0).all() and (np.diff(added) <= 0).all()
    assert "random/repeat0/round3/scores" not in labeled  # random ranks nothing


def test_a_selection_refuses_scores_that_do_not_match_its_picks():
    from strategies.base import Selection

    with pytest.raises(ValueError, match="2 scores for 3 picks"):
        Selection(indices=np.array([1, 2, 3]), scores=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="scores must be numbers"):
        Selection(indices=np.array([1]), scores=np.array(["high"]))
