"""The cache of trained generative models: each is trained once per (task, pool, seed, settings)
and kept on disk as a state dict with a checksum (loaded with ``weights_only``); later runs,
repeats and strategies load it, with how it was chosen (:meth:`Trained.record`: the held-out
loss, best epoch, epochs run and per-epoch losses). What a model keeps beside its weights (an
alpha-GAN's per-epoch losses and sample grid) its spec writes (:meth:`GenerativeSpec.save_extras`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.generative.base import GenerativeSpec
from bench.paths import cache_root

VERSION = "2"  # bump when training changes results; part of the cache key (2: epoch chosen on held-out data)
log = logging.getLogger(__name__)


def cache_key(task: str, pool_x: Tensor, spec: GenerativeSpec, seed: int) -> str:
    """A digest of everything the trained model depends on: task, pool contents, seed, settings."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "task": task,
                "seed": seed,
                "spec": dataclasses.asdict(spec),
                "version": VERSION,
                "shape": list(pool_x.shape),
            },
            sort_keys=True,
        ).encode()
    )
    digest.update(spec.cache_salt(pool_x).encode())  # empty for a VAE: its key is as it always was
    digest.update(pool_x.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def cache_path(task: str, pool_x: Tensor, spec: GenerativeSpec, seed: int, cache_dir: Path) -> Path:
    """Where the model for (task, pool, seed, spec) is kept: ``<cache_dir>/<kind>-<task>-<key>.pt``."""
    return Path(cache_dir) / f"{spec.kind}-{task}-{cache_key(task, pool_x, spec, seed)}.pt"


def cache_relative(path: Path) -> str:
    """``path``, a file under the cache root, relative to it (``generative/vae-mnist-<key>.pt``):
    how a manifest or report names a cached file, so it names no folder of the machine."""
    return Path(path).relative_to(cache_root()).as_posix()


def load_or_train(
    task: str,
    pool_x: Tensor,
    spec: GenerativeSpec,
    seed: int,
    cache_dir: Path,
    progress: bool = True,
) -> nn.Module:
    """The generative model for (task, pool, seed, spec), in eval mode and frozen, on the pool's
    device: loaded from ``cache_dir`` when trained before, else trained now and saved there."""
    return load_or_train_at(cache_path(task, pool_x, spec, seed, cache_dir), pool_x, spec, seed, progress)


def load_or_train_at(
    path: Path,
    pool_x: Tensor,
    spec: GenerativeSpec,
    seed: int,
    progress: bool = True,
) -> nn.Module:
    """:func:`load_or_train` with the cache file ``path`` (from :func:`cache_path`) given."""
    model = spec.build(tuple(pool_x.shape[1:]))
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            problem = integrity_problem(saved)
            if problem is None:
                model.load_state_dict(saved["state_dict"])
                log.info("loaded the cached generative model %s (final loss %.4g)", path, saved["final_loss"])
                return model.to(pool_x.device).eval().requires_grad_(False)
            log.warning(
                "cached generative model %s fails its integrity check (%s); retraining and replacing it", path, problem
            )
        except Exception as err:  # corrupt or stale file: retrain and replace it
            log.warning("cached generative model %s is unreadable (%s); retraining", path, err)
    start = time.perf_counter()
    trained = spec.train(pool_x, seed, progress)
    model = trained.model
    log.info(
        "trained %s in %.0f s: epoch %s of %s kept, final loss %.4g",
        path.name,
        time.perf_counter() - start,
        trained.best_epoch,
        trained.epochs_run,
        trained.final_loss,
    )
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "state_dict": state,
                "checksum": weights_digest(state),
                "spec": dataclasses.asdict(spec),
                "seed": seed,
                **trained.record(),
            },
            tmp,
        )
        tmp.replace(path)
        spec.save_extras(trained, pool_x, path, seed)
    except OSError as err:  # a read-only or full cache: the run goes on with the model in memory
        log.warning(
            "could not cache the trained generative model in %s (%s); going on without caching it",
            path.parent,
            err.strerror or err,
        )
    return model


def weights_digest(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes (the cache's integrity check)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name} {value.dtype} {tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def integrity_problem(saved: dict) -> str | None:
    """Why a cached model must not be used (a checksum that does not match its weights, or
    weights that are not finite), or None. Files from before checksums are checked for finiteness."""
    state = saved["state_dict"]
    if "checksum" in saved and saved["checksum"] != weights_digest(state):
        return "its weights do not match their checksum"
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        return f"non-finite weights in {', '.join(bad[:3])}"
    return None
