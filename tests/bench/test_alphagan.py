"""The alpha-GAN of CIFAR-10 (Tables S1-S5): both readings build, it trains, and it is cached."""

from __future__ import annotations

import json
import math

import pytest
import torch

import bench.generative.alphagan as generative
from bench.cli.main import main
from bench.generative.alphagan import HELD_OUT, LOSS_NAMES, AlphaGAN, held_out_l1, train_alphagan
from bench.generative.base import holdout_split
from bench.generative.cache import load_or_train
from tasks.base import AlphaGANSpec

TINY = AlphaGANSpec(channels=8, epochs=2, batch_size=16, lr=1e-3)


@pytest.fixture
def images():
    return torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout, width", [("pooled", 64 * 4 * 4), ("unpooled", 65536)])
def test_both_readings_of_the_tables_build_32x32_models(layout, width):
    model = AlphaGAN(AlphaGANSpec(layout=layout)).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # encoder out, generator in, image discriminator out, code discriminator (Table S5)
    assert [(m.in_features, m.out_features) for m in linears] == [
        (width, 3),
        (3, width),
        (width, 1),
        (3, 700),
        (700, 700),
        (700, 1),
    ]
    with torch.no_grad():
        z = model.encode(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
        x = model.decode(z)
    assert z.shape == (2, 3) and x.shape == (2, 3, 32, 32)
    assert 0 <= x.min() and x.max() <= 1


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="unknown alpha-GAN layout 'wide'"):
        AlphaGAN(AlphaGANSpec(layout="wide"))


def test_training_logs_every_loss_term_and_improves_reconstruction(images):
    trained = train_alphagan(images, TINY.replace(epochs=12, holdout=0.0), seed=0, progress=False)
    model, history = trained.model, trained.history
    assert len(history) == 12 and all(set(row) == set(LOSS_NAMES) for row in history)
    assert all(math.isfinite(v) for row in history for v in row.values())
    assert history[-1]["reconstruction_l1"] < history[0]["reconstruction_l1"]
    assert trained.best_epoch == trained.epochs_run == 12  # nothing held out: the last epoch
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_early_stopping_keeps_the_epoch_of_the_lowest_held_out_l1(images):
    spec = TINY.replace(epochs=12, holdout=0.25, patience=2, lr=3e-3)
    trained = train_alphagan(images, spec, seed=0, progress=False)
    losses = [row[HELD_OUT] for row in trained.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert trained.best_epoch == best + 1 and trained.final_loss == min(losses)
    assert trained.epochs_run == len(losses) == best + 1 + spec.patience < spec.epochs  # stopped by patience
    _, held = holdout_split(len(images), spec.holdout, seed=0)
    assert held_out_l1(trained.model, images[held]) == pytest.approx(min(losses), abs=1e-6)  # the best epoch's weights
    assert not trained.model.training  # measured in eval mode, left in eval mode


def test_training_is_reproducible_from_its_seed(images):
    first = train_alphagan(images, TINY, seed=3, progress=False).model
    second = train_alphagan(images, TINY, seed=3, progress=False).model
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_round_trips_through_the_cache_with_losses_and_samples(images, tmp_path, monkeypatch):
    calls = []
    original = generative.train_alphagan
    monkeypatch.setattr(generative, "train_alphagan", lambda *a, **k: calls.append(a) or original(*a, **k))
    first = load_or_train("toy", images, TINY, seed=0, cache_dir=tmp_path, progress=False)
    second = load_or_train("toy", images, TINY, seed=0, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    (path,) = tmp_path.glob("alphagan-toy-*.pt")
    saved = torch.load(path, weights_only=True)
    assert len(saved["history"]) == saved["epochs_run"] == TINY.epochs and saved["spec"]["layout"] == "pooled"
    log = json.loads(path.with_suffix(".json").read_text())
    assert [set(row) for row in log["losses_per_epoch"]] == [{*LOSS_NAMES, HELD_OUT}] * TINY.epochs
    assert log["best_epoch"] == saved["best_epoch"] and log["final_loss"] == saved["final_loss"]
    assert saved["final_loss"] == saved["history"][saved["best_epoch"] - 1][HELD_OUT]
    assert path.with_suffix(".png").stat().st_size > 0
    load_or_train("toy", images, TINY.replace(layout="unpooled", epochs=1), seed=0, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2  # another reading is another model


@pytest.mark.parametrize(
    "option, message",
    [
        ("colour=1", "has no such setting"),
        ("layout=wide", "use one of pooled, unpooled"),
        ("epochs=0", "must be positive"),
        ("lr=nan", "not a finite number"),
        ("epochs=two", "expected int"),
        ("patience=1.5", "expected int"),
        ("holdout=1.5", "holdout=1.5: must be at least 0 and below 1"),
        ("holdout=0.99999", "holdout=0.99999 holds out 50000 of 50000 pool samples and leaves 0 to train on"),
        ("patience=0", "patience=0: must be positive"),
    ],
)
def test_bad_generative_options_are_refused_before_any_work(capsys, tmp_path, option, message):
    code = main(
        ["run", "--task", "cifar10", "--strategy", "snn", "--generative-option", option, "--out", str(tmp_path / "o")]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_generative_options_without_a_latent_strategy_are_refused(capsys, tmp_path):
    code = main(
        [
            "run",
            "--task",
            "cifar10",
            "--strategy",
            "random",
            "--generative-option",
            "epochs=2",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "no chosen strategy uses a generative model" in capsys.readouterr().err


def test_the_generator_s_upsampling_is_nn_upsample_on_the_cpu_and_its_cuda_form_has_the_same_values():
    from bench.generative.alphagan import Upsample2x, upsample_by_expand

    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    plain = torch.nn.Upsample(scale_factor=2, mode="nearest")(x)
    ours = Upsample2x()(x)
    assert torch.equal(ours, plain)  # the same bits as before: cached alpha-GANs stay valid
    (g1,) = torch.autograd.grad(plain.square().sum(), x)
    (g2,) = torch.autograd.grad(ours.square().sum(), x)
    assert torch.equal(g1, g2)
    assert torch.equal(upsample_by_expand(x), plain)  # what CUDA runs under deterministic algorithms
