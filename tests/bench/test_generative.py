"""The generative model: the paper's VAE, trained on the pool only, cached by its inputs."""

from __future__ import annotations

import pytest
import torch

import bench.generative.vae as generative
from bench.generative import VAESpec
from bench.generative.cache import load_or_train
from bench.generative.vae import VAE

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
    trained, final = generative.train_vae(pool, SPEC.replace(epochs=30), seed=0, progress=False)
    torch.manual_seed(0)
    before = untrained.losses(pool)[0].item()
    assert final < before
    assert not any(p.requires_grad for p in trained.parameters())


def test_second_call_hits_the_cache(pool, tmp_path, count_training):
    first = load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    second = load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    assert len(count_training) == 1
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change", ["seed", "epochs", "latent_dim", "pool", "task"])
def test_any_changed_input_misses_the_cache(pool, tmp_path, count_training, change):
    load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    args = dict(task="toy", pool_x=pool, spec=SPEC, seed=0, cache_dir=tmp_path, progress=False)
    if change == "seed":
        args["seed"] = 1
    elif change == "epochs":
        args["spec"] = SPEC.replace(epochs=3)
    elif change == "latent_dim":
        args["spec"] = SPEC.replace(latent_dim=3)
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
    assert set(saved) >= {"state_dict", "final_loss", "spec", "seed"}


def test_a_corrupt_cache_file_is_retrained(pool, tmp_path, count_training):
    load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("vae-toy-*.pt")
    path.write_bytes(b"not a checkpoint")
    vae = load_or_train("toy", pool, SPEC, seed=0, cache_dir=tmp_path, progress=False)
    assert len(count_training) == 2 and vae.encode(pool[:2]).shape == (2, 2)
    torch.load(path, weights_only=True)  # replaced by a good file
