"""The generative model: the paper's VAE, trained on the pool only, cached by its inputs."""

from __future__ import annotations

import pytest
import torch

import bench.generative.cache as cache
import bench.generative.vae as generative
from bench.cli.main import main
from bench.generative import VAESpec
from bench.generative.base import holdout_split
from bench.generative.cache import cache_key, load_or_train
from bench.generative.vae import VAE, held_out_terms

SPEC = VAESpec(hidden=16, latent_dim=2, epochs=2, batch_size=32, lr=1e-2)


@pytest.fixture
def pool():
    return torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    original = generative.train_vae

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(generative, "train_vae", counting)
    return calls


def test_architecture_is_tables_s9_and_s10():
    vae = VAE((1, 28, 28), hidden=400, latent_dim=3)
    sizes = [(m.in_features, m.out_features) for m in vae.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [(784, 400), (400, 400), (400, 3), (400, 3), (3, 400), (400, 400), (400, 784)]
    z = vae.encode(torch.rand(5, 1, 28, 28))
    assert z.shape == (5, 3)
    x = vae.decode(z)
    assert x.shape == (5, 1, 28, 28) and 0 <= x.min() and x.max() <= 1


def test_training_lowers_the_reconstruction_loss(pool):
    untrained = VAE((1, 4, 4), 16, 2)
    trained = generative.train_vae(pool, SPEC.replace(epochs=30, holdout=0.0), seed=0, progress=False)
    torch.manual_seed(0)
    before = untrained.losses(pool)[0].item()
    assert trained.final_loss == trained.history[-1]["reconstruction"] < before  # nothing held out: the last epoch
    assert trained.best_epoch == trained.epochs_run == 30
    assert not any(p.requires_grad for p in trained.model.parameters())


@pytest.mark.parametrize("n, fraction, held", [(200, 0.1, 20), (990, 0.1, 99), (5, 0.01, 1), (7, 0.5, 4), (9, 0.0, 0)])
def test_the_held_out_split_is_disjoint_covers_the_pool_and_has_its_size(n, fraction, held):
    train, held_out = holdout_split(n, fraction, seed=0)
    assert len(held_out) == held and len(train) == n - held
    assert torch.equal(torch.cat([train, held_out]).sort().values, torch.arange(n))  # disjoint, the whole pool
    assert torch.equal(train, train.sort().values)
    if fraction == 0:
        assert torch.equal(train, torch.arange(n))


def test_the_held_out_split_is_seeded_on_a_stream_of_its_own():
    first, again, other = (holdout_split(1000, 0.1, seed)[1] for seed in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, torch.randperm(1000, generator=torch.Generator().manual_seed(3))[:100])


def test_a_held_out_split_that_leaves_too_little_to_train_on_is_refused():
    with pytest.raises(ValueError, match="holdout=0.9 holds out 3 of 3 pool samples and leaves 0 to train on"):
        holdout_split(3, 0.9, seed=0)
    with pytest.raises(ValueError, match="must be at least 0 and below 1"):
        holdout_split(10, 1.0, seed=0)


def test_the_vae_trains_on_its_share_only_and_holds_the_rest_out(monkeypatch):
    seen = []
    original = VAE.losses
    monkeypatch.setattr(VAE, "losses", lambda self, x, noise=None: seen.append(x) or original(self, x, noise))
    pool = torch.arange(40.0).repeat_interleave(4).view(40, 4) / 40  # row i holds i / 40
    trained = generative.train_vae(pool, SPEC.replace(holdout=0.25, epochs=1), seed=2, progress=False)
    train, held = holdout_split(40, 0.25, seed=2)
    fed = torch.cat(seen).mul(40).round().long()[:, 0]
    assert sorted(fed[:30].tolist()) == train.tolist()  # one epoch of training: exactly the training share
    assert sorted(fed[30:].tolist()) == held.sort().values.tolist()  # then the held-out loss
    assert set(trained.history[0]) == {"reconstruction", "kl", "held_out_loss", "held_out_reconstruction"}


def toy_overfitting_pool() -> torch.Tensor:
    """20 binary vectors: two random prototypes with 20% of bits flipped; a VAE with lr 1e-2
    learns the prototypes, then memorises its 16 training vectors' noise (held-out loss rises)."""
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(2, 64, generator=g) < 0.5).float()
    return (prototypes[torch.randint(0, 2, (20,), generator=g)] + (torch.rand(20, 64, generator=g) < 0.2).float()) % 2


def test_early_stopping_keeps_the_epoch_of_the_lowest_held_out_loss():
    pool = toy_overfitting_pool()
    spec = VAESpec(hidden=64, latent_dim=4, epochs=300, batch_size=16, lr=1e-2, holdout=0.2, patience=10)
    trained = generative.train_vae(pool, spec, seed=0, progress=False)
    losses = [row["held_out_loss"] for row in trained.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert trained.best_epoch == best + 1  # 1-based
    assert trained.epochs_run == len(losses) == best + 1 + spec.patience < spec.epochs  # stopped by patience
    assert max(losses[best:]) > losses[best] + 1  # the held-out loss rose after it (nats)
    _, held = holdout_split(len(pool), spec.holdout, seed=0)
    kept = held_out_terms(trained.model, pool[held], seed=0)["held_out_loss"]
    assert kept == pytest.approx(min(losses), abs=1e-5) and trained.final_loss == min(losses)


def test_beta_weighs_the_kl_term_of_training_only(pool):
    plain = generative.train_vae(pool, SPEC, seed=0, progress=False)
    weighted = generative.train_vae(pool, SPEC.replace(beta=4.0), seed=0, progress=False)
    assert weighted.history[-1]["kl"] < plain.history[-1]["kl"]  # a heavier KL weight: codes nearer the prior
    one = generative.train_vae(pool, SPEC.replace(beta=1), seed=0, progress=False)
    assert one.history == plain.history  # beta 1 is the plain ELBO


def test_second_call_hits_the_cache(pool, tmp_path, count_training):
    first = load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    second = load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    assert len(count_training) == 1
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change", ["seed", "epochs", "latent_dim", "pool", "task", "holdout", "patience", "beta"])
def test_any_changed_input_misses_the_cache(pool, tmp_path, count_training, change):
    load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    args = dict(task="toy", pool_x=pool, spec=SPEC, seed=0, cache_dir=tmp_path, progress=False)
    if change == "seed":
        args["seed"] = 1
    elif change == "epochs":
        args["spec"] = SPEC.replace(epochs=3)
    elif change == "latent_dim":
        args["spec"] = SPEC.replace(latent_dim=3)
    elif change in ("holdout", "patience", "beta"):
        args["spec"] = SPEC.replace(**{change: {"holdout": 0.2, "patience": 3, "beta": 2.0}[change]})
    elif change == "pool":
        args["pool_x"] = pool[:100]
    else:
        args["task"] = "other"
    load_or_train(**args)
    assert len(count_training) == 2


def test_weights_are_plain_state_dicts_loadable_with_weights_only(pool, tmp_path):
    load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("vae-toy-*.pt")
    saved = torch.load(path, weights_only=True)
    assert set(saved) >= {"state_dict", "final_loss", "spec", "seed", "history", "best_epoch", "epochs_run"}
    assert saved["epochs_run"] == len(saved["history"]) == SPEC.epochs and 1 <= saved["best_epoch"] <= 2
    assert saved["final_loss"] == saved["history"][saved["best_epoch"] - 1]["held_out_loss"]
    assert saved["spec"]["holdout"] == 0.1 and saved["spec"]["beta"] == 1.0


def test_the_cache_key_changes_with_its_version(pool, monkeypatch):
    before = cache_key("toy", pool, SPEC, 0)
    monkeypatch.setattr(cache, "VERSION", "other")
    assert cache_key("toy", pool, SPEC, 0) != before


@pytest.mark.parametrize(
    "option, message",
    [
        ("holdout=1.0", "holdout=1.0: must be at least 0 and below 1"),
        ("holdout=-0.1", "holdout=-0.1: must be at least 0 and finite"),
        ("holdout=0.999", "holdout=0.999 holds out 120 of 120 pool samples and leaves 0 to train on"),
        ("patience=0", "patience=0: must be positive"),
        ("patience=1.5", "patience=1.5: expected int"),
        ("beta=0", "beta=0: must be positive"),
        ("beta=inf", "not a finite number"),
    ],
)
def test_bad_held_out_settings_are_refused_naming_the_option(blobs_task, capsys, tmp_path, option, message):
    args = ["run", "--task", "blobs", "--strategy", "snn", "--subset", "120", "--generative-option", option]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"--generative-option {option.split('=')[0]}" in err or "not a finite number" in err
    assert message in err


def test_a_whole_number_for_a_float_setting_is_that_float_and_the_same_cached_model(blobs_task):
    from bench.run.config import RunConfig
    from bench.run.plan import plan_run

    given = plan_run(RunConfig(task="blobs", strategies=["snn"], generative_options={"beta": 2, "lr": 1})).generative
    written = plan_run(RunConfig(task="blobs", strategies=["snn"], generative_options={"beta": 2.0, "lr": 1.0}))
    assert type(given.beta) is float and type(given.lr) is float and given == written.generative
    pool = torch.rand(8, 8)
    assert cache_key("blobs", pool, given, 0) == cache_key("blobs", pool, written.generative, 0)


def test_a_corrupt_cache_file_is_retrained(pool, tmp_path, count_training):
    load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("vae-toy-*.pt")
    path.write_bytes(b"not a checkpoint")
    vae = load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    assert len(count_training) == 2 and vae.encode(pool[:2]).shape == (2, 2)
    torch.load(path, weights_only=True)  # replaced by a good file
