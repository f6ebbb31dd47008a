"""Hostile input values (issue 27, items 13-16, 19 and 27): absurd generative settings, an
absurd latent step, optimizers the training loop cannot drive, wrong-typed strategy options, a
damaged latent-quality file and a plug-in task whose data fail to load. Each is refused before
any work with exit 2 and a message naming what is wrong and the fix, or recovered from."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.run.plan
from bench.cli.main import main
from bench.testing import Blobs, registered
from strategies.random import RandomSampling

SNN = ["run", "--task", "blobs", "--strategy", "snn", "--rounds", "2", "--quiet", "--threads", "1"]


def refused(capsys, tmp_path: Path, *args: str) -> str:
    """Run ``args``, check it exits 2 with one error line, no traceback and no folder; the message."""
    code = main([*args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
    return err


@pytest.mark.parametrize(
    ("option", "flag", "limit"),
    [
        ("epochs=1000000000000", "--epochs", "100000"),
        ("batch_size=100000000", "--batch-size", "16777216"),
        ("latent_dim=1000000", "--latent-dim", "4096"),
        ("lr=1000", "--lr", "100"),
    ],
)
def test_generative_options_have_the_limits_of_the_runs_own_flags(capsys, tmp_path, blobs_task, option, flag, limit):
    err = refused(capsys, tmp_path, *SNN, "--generative-option", option)
    assert f"--generative-option {option} is out of range: at most {limit}, the limit of the run's own {flag}" in err


def test_a_generative_model_of_more_than_2_31_parameters_is_refused_naming_the_setting(capsys, tmp_path, blobs_task):
    err = refused(capsys, tmp_path, *SNN, "--generative-option", "hidden=100000000")
    assert "the blobs generative model (VAE) with hidden=100000000 would have 20,000,002,600,000,012 parameters" in err
    assert "more than 2**31" in err and err.rstrip().endswith("lower hidden")


def test_a_width_that_overflows_torch_is_refused(capsys, tmp_path, blobs_task):
    err = refused(capsys, tmp_path, *SNN, "--generative-option", f"hidden={10**30}", "--latent-dim", "3")
    assert f"with hidden={10**30}, latent_dim=3 cannot be built: TypeError:" in err
    assert err.rstrip().endswith("lower hidden or latent_dim")


def test_a_generative_model_larger_than_the_machines_memory_is_refused(capsys, tmp_path, blobs_task, monkeypatch):
    monkeypatch.setattr(bench.run.plan, "machine_memory", lambda device: 2**30)  # a machine with 1 GiB
    err = refused(capsys, tmp_path, *SNN, "--generative-option", "hidden=8192")  # 134 M parameters: 2 GiB to train
    assert "with hidden=8192 would need 2.0 GiB to train (its weights, their gradients and Adam's two moments" in err
    assert "more than this machine's 1.0 GiB of memory; lower hidden" in err


def test_an_absurd_alpha_gan_reconstruction_weight_is_refused():
    from bench.generative import AlphaGANSpec

    with pytest.raises(ValueError, match=r"recon_weight=1e\+300 is out of range: at most 1e\+06"):
        AlphaGANSpec(recon_weight=1e300).check()
    AlphaGANSpec(recon_weight=1e6).check()


def test_latent_dim_as_a_generative_option_is_the_flags_twin(capsys, tmp_path, blobs_task):
    from bench.run.config import RunConfig

    plan = bench.run.plan.plan_run(RunConfig(task="blobs", strategies=["snn"], generative_options={"latent_dim": 3}))
    assert plan.generative is not None and plan.generative.latent_dim == 3
    err = refused(capsys, tmp_path, *SNN, "--latent-dim", "4", "--generative-option", "latent_dim=3")
    assert "--latent-dim 4 and --generative-option latent_dim=3 disagree; give one of them" in err


@pytest.mark.parametrize(
    ("args", "given"),
    [
        (["--alpha", "1e300"], "--alpha 1e+300 (snn's step in the latent space)"),
        (["--option", "alpha=1001"], "--alpha 1001 (snn's step in the latent space)"),
        (["--option", "snn.alpha=5000"], "--option snn.alpha=5000 (snn's step in the latent space)"),
    ],
)
def test_a_latent_step_beyond_every_code_is_refused(capsys, tmp_path, blobs_task, args, given):
    err = refused(capsys, tmp_path, *SNN, *args)
    assert f"{given} is out of range: at most 1000." in err and "e.g. the default 0.5" in err


def test_the_longest_latent_step_plans(blobs_task):
    from bench.run.config import RunConfig

    bench.run.plan.plan_run(RunConfig(task="blobs", strategies=["snn", "si"], strategy_options={"alpha": 1000}))


RANDOM = ["run", "--task", "blobs", "--strategy", "random", "--rounds", "2", "--quiet", "--threads", "1"]


@pytest.mark.parametrize(
    ("optimizer", "why"),
    [
        ("lbfgs", "TypeError: LBFGS.step() missing 1 required positional argument: 'closure'"),
        ("SparseAdam", "RuntimeError: SparseAdam does not support dense gradients"),
    ],
)
def test_optimizers_the_training_loop_cannot_drive_are_refused_listing_those_it_can(
    capsys, tmp_path, blobs_task, optimizer, why
):
    err = refused(capsys, tmp_path, *RANDOM, "--optimizer", optimizer)
    assert err.startswith(f"error: --optimizer {optimizer}: the training loop cannot drive it ({why}")
    working = err.rstrip().split("Use one that does: ")[1].split(", ")
    assert {"adam", "adamw", "sgd", "rmsprop"} <= set(working) and not {"lbfgs", "sparseadam"} & set(working)


def test_optimizers_the_training_loop_drives_plan(blobs_task):
    from bench.run.config import RunConfig

    for optimizer in bench.run.plan.drivable_optimizers():
        bench.run.plan.plan_run(RunConfig(task="blobs", strategies=["random"], optimizer=optimizer))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--strategy", "snn", "--option", "alpha="],
            "--option alpha='': strategy 'snn' expects float for alpha (its default is 0.5), got str ''; "
            "give a number, e.g. --option alpha=0.5",
        ),
        (
            ["--strategy", "si", "--option", "si.max_candidates=2.5"],
            "--option si.max_candidates=2.5: strategy 'si' expects int for max_candidates (its default is 20), "
            "got float 2.5; give a whole number, e.g. --option si.max_candidates=20",
        ),
        (
            ["--strategy", "si", "--option", "si.start=1"],
            "--option si.start=1: strategy 'si' expects str for start (its default is 'prior'), got int 1; give "
            "text, e.g. --option si.start=prior (strategy 'si' said: start must be one of prior, pool (got 1))",
        ),
    ],
)
def test_a_strategy_option_of_the_wrong_type_is_named_with_the_type_expected(
    capsys, tmp_path, blobs_task, args, message
):
    assert refused(capsys, tmp_path, *RANDOM, *args) == f"error: {message}\n"


class Levelled(RandomSampling):
    """Random sampling with an unannotated option whose constructor compares it with a number."""

    name = "levelled"

    def __init__(self, level=1) -> None:
        if level <= 0:
            raise ValueError(f"level must be positive (got {level})")
        self.level = level


def test_a_type_error_of_an_unannotated_constructor_names_the_option_and_its_defaults_type(capsys, tmp_path):
    with registered(Blobs, Levelled):
        err = refused(capsys, tmp_path, *RANDOM, "--strategy", "levelled", "--option", "level=")
        assert err.startswith("error: --option level='': strategy 'levelled' expects int for level (its default is 1)")
        assert "(strategy 'levelled' said: '<=' not supported between instances of 'str' and 'int')" in err
        main([*RANDOM, "--strategy", "levelled", "--option", "level=0.5", "--out", str(tmp_path / "ok")])
        assert "error" not in capsys.readouterr().err  # no annotation: a float where the default is an int passes


@pytest.fixture
def quality_file_of_a_blobs_model(blobs_task, tmp_path):
    """A quickly trained blobs VAE, its statistics computed and kept; what cached_quality needs."""
    from bench.generative.cache import load_or_train
    from bench.generative.quality import cached_quality

    blobs_task.cache_dir = tmp_path
    data = blobs_task.load()
    spec = blobs_task.generative.replace(epochs=2)
    vae = load_or_train("blobs", data.pool_x, spec, 0, tmp_path / "generative", progress=False)
    (path,) = (tmp_path / "generative").glob("vae-blobs-*.pt")
    kept = cached_quality(path, vae, spec, blobs_task, data, seed=0)
    return path, (vae, spec, blobs_task, data), kept


def damage(saved: dict, field: str, value) -> None:
    """Set the field at the dotted path ``field`` of ``saved`` to ``value`` (None: delete it)."""
    *parents, last = field.split(".")
    for name in parents:
        saved = saved[name]
    if value is None:
        del saved[last]
    else:
        saved[last] = value


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("posterior.kl", "abc", "posterior.kl is str 'abc', not float"),
        ("posterior.mean", [0.1, "x"], "posterior.mean[1] is str 'x', not float"),
        ("reconstruction.loss.pool", [1.0], "reconstruction['loss']['pool'] is list [1.0], not float"),
        ("samples.pool", 1.5, "samples['pool'] is float 1.5, not int"),
        ("seed", True, "seed is bool True, not int"),
        ("realism.values", [], "realism.values is list [], not an object"),
        ("spec", "hidden=32", "spec is str 'hidden=32', not an object"),
        ("posterior", None, "posterior is missing"),
        ("extra", 1, "the file has unknown fields: extra"),
    ],
)
def test_a_latent_quality_file_that_breaks_its_schema_is_computed_again(
    quality_file_of_a_blobs_model, caplog, field, value, why
):
    import json

    from bench.generative.quality import cached_quality, quality_file

    path, model, kept = quality_file_of_a_blobs_model
    saved = json.loads(quality_file(path).read_text())
    damage(saved, field, value)
    quality_file(path).write_text(json.dumps(saved))
    again = cached_quality(path, *model, seed=0)
    assert f"is damaged or unreadable ({why}); computing it again" in caplog.text
    assert {**again.as_dict(), "seconds": None} == {**kept.as_dict(), "seconds": None}
    assert json.loads(quality_file(path).read_text()) == again.as_dict()  # replaced by a valid one


def test_the_latent_command_recomputes_a_damaged_quality_file(blobs_task, capsys, caplog, monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    latent = ["latent", "--task", "blobs", "--subset", "120", "--generative-option", "epochs=2", "--threads", "1"]
    assert main(latent) == 0
    (path,) = (tmp_path / "generative").glob("*.quality.json")
    saved = json.loads(path.read_text())
    saved["posterior"]["kl"] = "abc"
    path.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(latent) == 0
    assert "posterior.kl is str 'abc', not float" in caplog.text
    assert "KL(N(mean, cov) || N(0, I))" in capsys.readouterr().out


class BrokenLoad(Blobs):
    """A plug-in task whose data cannot be read."""

    name = "broken-load"

    def load(self, data_root=None, download=True):
        raise ValueError("the header of pool.csv names 7 columns, the rows have 9")


class LoadsNothing(Blobs):
    """A plug-in task whose load() forgets to return its data."""

    name = "loads-nothing"

    def load(self, data_root=None, download=True):
        super().load(data_root, download)


def test_a_task_whose_load_raises_is_refused_naming_the_task_and_the_error(capsys, tmp_path):
    with registered(BrokenLoad):
        err = refused(capsys, tmp_path, *RANDOM, "--task", "broken-load")
    assert err.startswith(
        "error: task 'broken-load' failed to load its data: ValueError: the header of pool.csv names 7 columns, "
        "the rows have 9 (raised in load, "
    )
    assert f"{__file__}:" in err and err.rstrip().endswith("); fix the task or its data")


def test_a_task_whose_load_returns_no_data_is_refused(capsys, tmp_path):
    with registered(LoadsNothing):
        err = refused(capsys, tmp_path, *RANDOM, "--task", "loads-nothing")
    assert err == "error: task 'loads-nothing': load() returned NoneType, not TaskData; fix the task\n"


def test_the_harness_s_own_errors_after_loading_still_raise(tmp_path, blobs_task, monkeypatch):
    from bench.run.config import RunConfig

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug of the harness")

    monkeypatch.setattr(bench.run.plan, "check_labels", bug)
    plan = bench.run.plan.plan_run(RunConfig(task="blobs", strategies=["random"]))
    with pytest.raises(ZeroDivisionError, match="a bug of the harness"):
        bench.run.plan.load_data(plan)
