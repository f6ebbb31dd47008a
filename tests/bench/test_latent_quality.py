"""The latent-quality statistics of a generative model: the numbers on known inputs, the cache
beside the weights, the ``latent`` command, the run manifest, and the IVUS realism measures."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import bench.generative.quality as latent_quality
from bench.cli.main import main
from bench.cli.runner import execute
from bench.generative.cache import load_or_train
from bench.generative.quality import cached_quality, compute, posterior_fit, quality_file
from bench.generative.realism import frechet_distance
from bench.run.config import RunConfig
from tasks.base import RealismSets, TaskData
from tasks.ivus import LABELED, PEAK, TRIED, IVUSTask
from tasks.ivus_cohort import make_cohort


def draws(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_codes_from_the_prior_fit_it():
    fit = posterior_fit(draws(20_000, 3))
    assert fit.kl < 0.01
    assert fit.outside == pytest.approx(0.01, abs=0.003)
    assert fit.ball == pytest.approx(11.345, abs=1e-3)  # chi2.ppf(0.99, 3)
    np.testing.assert_allclose(fit.mean, 0, atol=0.03)
    np.testing.assert_allclose(fit.eigenvalues, 1, atol=0.05)
    assert fit.eigenvalues == sorted(fit.eigenvalues, reverse=True)


def test_shifted_or_squeezed_codes_are_far_from_the_prior():
    shifted = posterior_fit(draws(20_000, 3) + 3)
    assert shifted.kl == pytest.approx(0.5 * 3 * 9, rel=0.02)  # |mu|^2 / 2 with unit covariance
    assert shifted.outside > 0.5
    squeezed = posterior_fit(draws(20_000, 3) * 0.1)
    assert squeezed.kl > 3 and squeezed.outside == 0
    assert posterior_fit(torch.zeros(100, 2)).kl == math.inf  # collapsed codes: no density


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_a_shift():
    a, b = draws(2000, 8, 0), draws(2000, 8, 1)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(a, b) < 0.1  # two samples of one distribution: the finite-sample floor
    shifts = [frechet_distance(a, b + s) for s in (0.5, 1.0, 2.0)]
    assert shifts == sorted(shifts)
    assert shifts[-1] == pytest.approx(8 * 2.0**2, rel=0.05)  # |mean shift|^2
    assert frechet_distance(a, 2 * b) == pytest.approx(8 * (2 - 1) ** 2, rel=0.1)  # scale: tr(S1 + S2 - 2 sqrt(S1 S2))


@pytest.fixture
def blobs_model(blobs_task, tmp_path):
    """The blobs task (its cache in tmp_path), its data and a quickly trained VAE with its cache file."""
    blobs_task.cache_dir = tmp_path
    data = blobs_task.load()
    spec = blobs_task.generative.replace(epochs=2)
    vae = load_or_train("blobs", data.pool_x, spec, 0, tmp_path / "generative", progress=False)
    (path,) = (tmp_path / "generative").glob("vae-blobs-*.pt")
    return blobs_task, data, spec, vae, path


def test_statistics_are_kept_beside_the_weights_once_and_reused(blobs_model, monkeypatch):
    task, data, spec, vae, path = blobs_model
    first = cached_quality(path, vae, spec, task, data, seed=0)
    assert quality_file(path) == path.with_name(path.stem + ".quality.json") and quality_file(path).exists()
    saved = json.loads(quality_file(path).read_text())
    assert saved["samples"] == {"pool": 360, "held_out": 40, "test": 200, "prior": 360}  # the blobs pool holds out 10%
    assert saved["reconstruction"].keys() == {"loss", "mse"}
    assert all(parts.keys() == {"pool", "held_out", "test"} for parts in saved["reconstruction"].values())
    assert saved["training"] == {
        "trained_on": 360,
        "held_out": 40,
        "max_epochs": 2,
        "patience": spec.patience,
        "epochs_run": 2,
        "best_epoch": saved["training"]["best_epoch"],
        "held_out_loss": torch.load(path, weights_only=True)["final_loss"],
        "held_out_loss_is": "negative ELBO (KL weight 1), nats per sample",
    }
    assert saved["training"]["best_epoch"] in (1, 2)
    assert set(saved["realism"]["values"]["Frechet distance to the pool"]) == {"test", "reconstructions", "prior"}

    monkeypatch.setattr(latent_quality, "compute", lambda *a, **k: pytest.fail("computed again"))
    assert cached_quality(path, vae, spec, task, data, seed=0) == first

    monkeypatch.undo()
    with torch.no_grad():
        vae.mean.bias.add_(1.0)  # other weights (e.g. a retrained model): computed again
    moved = cached_quality(path, vae, spec, task, data, seed=0)
    assert moved.weights != first.weights and moved.posterior.mean != first.posterior.mean
    assert json.loads(quality_file(path).read_text())["weights"] == moved.weights


def test_computing_draws_nothing_from_torch_s_global_rng_and_repeats_itself(blobs_model):
    task, data, spec, vae, path = blobs_model
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = compute(vae, spec, task, data, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    second = compute(vae, spec, task, data, seed=0)
    assert {**first.as_dict(), "seconds": None} == {**second.as_dict(), "seconds": None}


def test_the_latent_command_describes_a_tiny_model(blobs_task, capsys):
    assert (
        main(["latent", "--task", "blobs", "--subset", "120", "--generative-option", "epochs=2", "--threads", "1"]) == 0
    )
    out = capsys.readouterr().out
    for text in (
        "Latent quality of the blobs generative model: VAE",
        "108 random pool samples x the model trained on, 12 random pool samples held out",
        "held-out pool (12)",
        "of max 2 (stopped after 2 epochs, patience 20; held-out loss ",
        "negative ELBO (KL weight 1), nats per sample, on 12 held-out pool samples; trained on 108)",
        "Bernoulli cross-entropy, nats per sample",
        "squared error per pixel",
        "covariance eigenvalues, largest first",
        "KL(N(mean, cov) || N(0, I))",
        "outside the prior's 99% ball",
        "Frechet distance to the pool",
        "reference F: the blobs target model, trained 2 epochs on all 120",
        "Seconds to compute",
    ):
        assert text in out, text


def test_the_held_out_samples_are_those_training_held_out_and_nothing_held_out_leaves_a_dash(blobs_model, monkeypatch):
    task, data, spec, vae, path = blobs_model
    measured = []
    original = latent_quality.reconstruct
    monkeypatch.setattr(latent_quality, "reconstruct", lambda m, s, x: measured.append(x) or original(m, s, x))
    quality = compute(vae, spec, task, data, seed=0)
    train, held = spec.pool_split(len(data.pool_x), seed=0)
    pool, _, held_out = measured
    rows = {tuple(row.tolist()): i for i, row in enumerate(data.pool_x)}
    assert sorted(rows[tuple(row.tolist())] for row in held_out) == held.sort().values.tolist()
    assert {rows[tuple(row.tolist())] for row in pool} <= set(train.tolist())
    assert quality.training == {}  # computed without its cache file: not known

    flat = compute(vae, spec.replace(holdout=0.0), task, data, seed=0)
    assert flat.samples["held_out"] == 0 and "held_out" not in flat.reconstruction["loss"]
    text = latent_quality.describe(flat)
    assert "held-out pool (0)" in text and "epoch chosen" not in text


def test_the_latent_command_refuses_a_task_without_a_generative_model(capsys, blobs_task, monkeypatch):
    monkeypatch.setattr(type(blobs_task), "capabilities", frozenset({"probabilities", "embeddings"}))
    assert main(["latent", "--task", "blobs"]) == 2
    assert "has no generative model" in capsys.readouterr().err


def test_a_run_s_manifest_carries_the_quality_and_its_numbers_do_not_depend_on_it(blobs_task, tmp_path):
    config = dict(
        task="blobs",
        strategies=["random", "snn"],
        rounds=2,
        seed=4,
        threads=1,
        quiet=True,
        generative_options={"epochs": 3},
    )
    first = execute(RunConfig(**config, out=tmp_path / "a"))  # computes the statistics
    again = execute(RunConfig(**config, out=tmp_path / "b"))  # reads them from the cache
    manifest = json.loads((first / "manifest.json").read_text())
    quality = manifest["generative"]["quality"]
    assert quality["weights"] and quality["task"] == "blobs" and quality["spec"]["epochs"] == 3
    assert math.isfinite(quality["posterior"]["kl"]) and len(quality["posterior"]["mean"]) == 2
    assert json.loads((again / "manifest.json").read_text())["generative"]["quality"] == quality
    a, b = (pd.read_csv(run / "rounds.csv") for run in (first, again))
    assert a["value"].tolist() == b["value"].tolist()


def test_ivus_realism_compares_wall_shapes_and_peak_stress(tmp_path):
    task = IVUSTask(workers=1)
    task.cache_dir = tmp_path
    masks = torch.from_numpy(make_cohort(8, seed=0).masks.astype(np.float32)).unsqueeze(1)
    sets = RealismSets(
        pool=masks[:4], test=masks[4:], reconstructions=masks[:4] * 0.8 + 0.05, prior=torch.zeros(4, 1, 64, 64)
    )  # soft copies of the pool masks; blank masks
    realism = task.realism(sets, TaskData(masks[:4], masks[:4], masks[4:], masks[4:]), seed=0)
    values = realism.values
    assert (
        set(values) == set(realism.about) == {"plaque burden", "lumen roughness", "wall pixels", PEAK, TRIED, LABELED}
    )
    for measure in ("plaque burden", "lumen roughness", "wall pixels", PEAK):
        assert values[measure]["reconstructions"] == pytest.approx(values[measure]["pool"])
    assert 0.2 < values["plaque burden"]["pool"] < 0.9 and values["wall pixels"]["pool"] > 100
    assert 20 < values[PEAK]["pool"] < 300
    assert values[TRIED] == dict.fromkeys(["pool", "test", "reconstructions", "prior"], 1.0)
    assert values[LABELED]["pool"] == 1 and values[LABELED]["prior"] == 0  # a blank mask has no wall
    assert values["wall pixels"]["prior"] == 0 and math.isnan(values[PEAK]["prior"])
