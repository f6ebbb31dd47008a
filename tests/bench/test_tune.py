"""``python -m bench tune`` and ``run --recipe``: recipes chosen on validation alone, a bad grid
refused before any work, the recipe file's round trip, and a tune folder resumed."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import pandas as pd
import pytest

from bench.cli import runner as runner_module
from bench.cli.main import main
from bench.cli.tune import Score, rank, read_validation, validation_score
from bench.run.config import ConfigError, RunConfig
from bench.run.manifest import manifest_problem
from bench.run.recipe import Recipe, grid_recipes, parse_grid, read_recipe
from bench.testing import Blobs, registered

#: A short tune on blobs: 20 + 10 + 10 labels, 50 validation samples, one thread.
FAST = ["--task", "blobs", "--validation", "50", "--threads", "1", "--quiet"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_runs(monkeypatch):
    """Fails the test if tune starts or resumes any run."""
    for name in ("execute", "resume"):
        monkeypatch.setattr(runner_module, name, lambda *a, **k: pytest.fail("a run was started"))


@pytest.mark.parametrize(
    "grid, says",
    [
        (["colour=1,2"], "unknown key 'colour'"),
        (["batch-size=8,16"], "did you mean batch_size"),
        (["lr=nan,1e-3"], "lr = nan is not a finite number"),
        (["lr=1e-3,inf"], "lr = inf is not a finite number"),
        (["lr="], "--grid lr=: no values"),
        (["lr=1e-3,"], "an empty value"),
        (["lr=1e-3", "lr=1e-2"], "key lr is given twice"),
        (["lr=0.01,1e-2"], "0.01 is listed twice"),
        (["epochs=2.5"], "epochs = 2.5 is float; give a whole number"),
        (["augment=maybe"], "augment = 'maybe' is str; give bool"),
        (["epochs=1,0"], "grid point epochs=0: --epochs must be at least 1"),
        (["si.start=pool,prior"], "grid point si.start=pool: option 'si.start' is not accepted by any chosen strategy"),
        (["optimizer.momentum=0.5"], "grid point optimizer.momentum=0.5: optimizer adam with options"),
        ([], "no --grid given"),
    ],
)
def test_a_bad_grid_is_refused_before_any_work(capsys, tmp_path, blobs_task, no_runs, grid, says):
    out = tmp_path / "tune"
    code, _, err = cli(capsys, "tune", *FAST, *(f"--grid={item}" for item in grid), "--out", str(out))
    assert code == 2
    assert says in err
    assert not out.exists()


def test_tune_refuses_a_flag_the_grid_sets_and_no_validation(capsys, tmp_path, blobs_task, no_runs):
    out = tmp_path / "tune"
    code, _, err = cli(capsys, "tune", *FAST, "--lr", "0.1", "--grid", "lr=1e-3,1e-2", "--out", str(out))
    assert code == 2 and "--lr and --grid set the same setting" in err
    code, _, err = cli(capsys, "tune", "--task", "blobs", "--grid", "lr=1e-3", "--out", str(out))
    assert code == 2 and "--validation N is required" in err
    assert not out.exists()


class WrongTestLabels(Blobs):
    """Blobs whose every test label is another class: the test metric changes, nothing else does."""

    def load(self, data_root=None, download=True):
        data = super().load(data_root, download)
        data.test_y = (data.test_y + 1) % 4
        return data


def tune_blobs(capsys, out, task: type[Blobs]) -> None:
    with registered(task):
        code, _, err = cli(
            capsys, "tune", *FAST, "--grid", "lr=1e-3,3e-2", "--grid", "epochs=1,3", "--repeats", "2", "--out", str(out)
        )
    assert code == 0, err


def test_tune_never_reads_test_values(capsys, tmp_path):
    """Changing every test label changes the test curves but not the ranking or the recipe."""
    tune_blobs(capsys, tmp_path / "a", Blobs)
    tune_blobs(capsys, tmp_path / "b", WrongTestLabels)
    for name in ("ranking.csv", "ranking.md", "recipe.toml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    ranking = pd.read_csv(tmp_path / "a" / "ranking.csv")
    for folder in ranking["folder"]:
        test_a = pd.read_csv(tmp_path / "a" / folder / "rounds.csv")["value"]
        test_b = pd.read_csv(tmp_path / "b" / folder / "rounds.csv")["value"]
        assert not test_a.equals(test_b)  # the test values did change
    columns = set(ranking.columns)
    assert columns == {"rank", "lr", "epochs", "metric", "direction", "val_aubc_mean", "val_aubc_std"} | {
        "repeats",
        "n_validation",
        "folder",
    }
    assert "value" not in read_validation(tmp_path / "a" / ranking["folder"][0]).columns
    toml = (tmp_path / "a" / "recipe.toml").read_text()
    assert "no test value was read" in toml and "test" not in toml.replace("no test value", "")
    assert read_recipe(tmp_path / "a" / "recipe.toml").settings == {
        k: ranking.loc[0, k].item() for k in ("lr", "epochs")
    }


def curve(strategy: str, repeat: int, values: list[float]) -> pd.DataFrame:
    """One unit's validation rows: n_labeled 10, 20, 30, ..."""
    return pd.DataFrame(
        dict(
            strategy=strategy,
            seed=repeat,
            repeat=repeat,
            round=range(1, len(values) + 1),
            n_labeled=[10 * (t + 1) for t in range(len(values))],
            n_validation=50,
            val_value=values,
        )
    )


def test_the_validation_score_is_the_mean_over_repeats_of_the_area_per_label():
    # repeat 0: (55 * 10 + 65 * 10) / 20 = 60; repeat 1: 40 -> mean 50, std sqrt(200)
    score = validation_score(pd.concat([curve("random", 0, [50, 60, 70]), curve("random", 1, [40, 40, 40])]))
    assert score.mean == pytest.approx(50) and score.std == pytest.approx(math.sqrt(200)) and score.repeats == 2
    # two strategies: a repeat scores their mean (60 and 20 -> 40); a repeat one strategy did not finish is left out
    both = pd.concat([curve("random", 0, [50, 60, 70]), curve("snn", 0, [20, 20, 20]), curve("random", 1, [90, 90])])
    score = validation_score(both)
    assert (score.mean, score.repeats) == (pytest.approx(40), 1) and math.isnan(score.std)


def test_the_ranking_follows_the_metrics_direction_and_ties_keep_grid_order():
    recipes = grid_recipes("blobs", {"lr": [0.1, 0.2, 0.3, 0.4]})
    scores = [Score(50, 1, 2), Score(70, 1, 2), Score(math.nan, math.nan, 0), Score(50, 2, 2)]
    assert rank(recipes, scores, higher_is_better=True) == [1, 0, 3, 2]
    assert rank(recipes, scores, higher_is_better=False) == [0, 3, 1, 2]


def test_a_recipe_round_trips_through_its_file_and_applies(tmp_path):
    settings = {
        "lr": 1e-05,
        "epochs": 3,
        "augment": False,
        "start": "fresh",
        "optimizer.weight_decay": 0.0001,
        "si.start": "pool",
    }
    recipe = Recipe("blobs", settings)
    recipe.write(tmp_path / "r.toml", ["how it was chosen", ""])
    assert read_recipe(tmp_path / "r.toml") == recipe
    config = recipe.apply(
        RunConfig(task="blobs", strategies=["si"], optimizer_options={"momentum": 0.9}, strategy_options={"alpha": 1})
    )
    assert (config.lr, config.epochs, config.augment, config.start) == (1e-05, 3, False, "fresh")
    assert config.optimizer_options == {"momentum": 0.9, "weight_decay": 0.0001}
    assert config.strategy_options == {"alpha": 1, "si.start": "pool"}
    assert recipe.name == "lr=1e-05,epochs=3,augment=false,start=fresh,optimizer.weight_decay=0.0001,si.start=pool"
    with pytest.raises(ConfigError, match="tuned on task 'blobs', not 'mnist'"):
        recipe.apply(RunConfig(task="mnist", strategies=["random"]))
    clashing = RunConfig(task="blobs", strategies=["si"], epochs=4, strategy_options={"start": "prior"})
    assert recipe.clashes(clashing) == ["--epochs", "--option start="]
    assert parse_grid(["lr=1,2e-3", "augment=true"]) == {"lr": [1.0, 0.002], "augment": [True]}


@pytest.mark.parametrize(
    "text, says",
    [
        ('task = "blobs"\nlr = "fast"\n', "lr = 'fast' is str; give a whole number or float"),
        ('task = "blobs"\ncolour = 1\n', "unknown key 'colour'"),
        ('task = "blobs"\n"optimizer.momentum" = 0.5\n', "belongs in the [options] table"),
        ('task = "blobs"\n[options]\nepochs = 2\n', "epochs is not an option"),
        ("lr = 0.1\n", "names no task"),
        ('task = "blobs"\n', "sets nothing"),
        ("task = [\n", "is not TOML"),
    ],
)
def test_a_bad_recipe_file_is_refused(tmp_path, text, says):
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        read_recipe(tmp_path / "r.toml")
    assert says in str(err.value)


RUN = ["run", "--task", "blobs", "--strategy", "random", "--threads", "1", "--quiet", "--rounds", "2"]


def test_run_recipe_applies_it_and_records_it_in_the_manifest(capsys, tmp_path, blobs_task):
    path = tmp_path / "recipe.toml"
    Recipe("blobs", {"lr": 0.03, "epochs": 1, "optimizer.weight_decay": 0.001}).write(path, ["chosen by hand"])
    code, _, err = cli(capsys, *RUN, "--recipe", str(path), "--out", str(tmp_path / "run"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["recipe"] == {
        "file": "recipe.toml",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "settings": {"lr": 0.03, "epochs": 1, "optimizer.weight_decay": 0.001},
    }
    assert (manifest["protocol"]["lr"], manifest["protocol"]["epochs"]) == (0.03, 1)
    assert manifest["protocol"]["optimizer_options"] == {"weight_decay": 0.001}
    # what a resume reads is a run's manifest, and its config holds the applied settings
    assert manifest_problem(manifest) is None
    assert RunConfig.from_manifest(manifest["config"]).lr == 0.03


def test_run_recipe_refuses_another_tasks_recipe_a_clashing_flag_and_resume(capsys, tmp_path, blobs_task):
    path = tmp_path / "recipe.toml"
    Recipe("mnist", {"lr": 0.03}).write(path)
    code, _, err = cli(capsys, *RUN, "--recipe", str(path), "--out", str(tmp_path / "run"))
    assert code == 2 and "tuned on task 'mnist', not 'blobs'" in err
    Recipe("blobs", {"lr": 0.03, "random.foo": 1}).write(path)
    code, _, err = cli(capsys, *RUN, "--recipe", str(path), "--lr", "0.1", "--out", str(tmp_path / "run"))
    assert code == 2 and "--lr and --recipe" in err and "drop the flag" in err
    code, _, err = cli(capsys, "run", "--resume", str(tmp_path / "run"), "--recipe", str(path))
    assert code == 2 and "a resumed run keeps the recipe it started with" in err
    assert not (tmp_path / "run").exists()


def test_a_resumed_tune_skips_finished_grid_points(capsys, tmp_path, blobs_task, monkeypatch):
    out = tmp_path / "tune"
    code, _, err = cli(capsys, "tune", *FAST, "--grid", "lr=1e-3,3e-2,1e-1", "--out", str(out))
    assert code == 0, err
    ranking = (out / "ranking.csv").read_bytes()
    # lr=0.001 finished, lr=0.03 stopped (its manifest says interrupted), lr=0.1 never started
    manifest = json.loads((out / "lr=0.03" / "manifest.json").read_text())
    (out / "lr=0.03" / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    shutil.rmtree(out / "lr=0.1")
    for name in ("ranking.csv", "ranking.md", "recipe.toml"):
        (out / name).unlink()
    calls = []
    for name in ("execute", "resume"):
        real = getattr(runner_module, name)
        monkeypatch.setattr(
            runner_module,
            name,
            lambda first, *a, _n=name, _f=real, **k: calls.append((_n, first)) or _f(first, *a, **k),
        )
    code, _, err = cli(capsys, "tune", "--resume", str(out), "--quiet")
    assert code == 0, err
    assert [(n, getattr(x, "out", x).name) for n, x in calls] == [("resume", "lr=0.03"), ("execute", "lr=0.1")]
    assert (out / "ranking.csv").read_bytes() == ranking
    code, _, err = cli(capsys, "tune", "--resume", str(out), "--lr", "0.1")
    assert code == 2 and "--lr with --resume: a resumed tune keeps its grid" in err
