"""Realism of generated inputs in a task's own feature space (used where :meth:`Task.realism`
gives no measures of the task's own).

A reference F, the task's ``make_model()``, is trained once on the whole labeled pool for
:data:`REFERENCE_EPOCHS` epochs with the task's protocol optimizer, learning rate and batch size,
and cached in the task's cache folder keyed by everything it depends on. The Frechet distance
between Gaussian fits of its ``embed`` features (the FID of Heusel et al. 2017, with the task's
own F in place of Inception) compares each set of inputs with the real pool samples; the
held-out test set's distance is the floor that finite samples of real data give.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.training import train_epochs
from tasks.base import Capability, Realism, RealismSets, Task, TaskData, make_optimizer, optimizer_name

REFERENCE_EPOCHS = 2  # LeNet on the 60k MNIST pool: about 40 s on one CPU thread
BATCH = 256  # inference batch of the features
VERSION = "1"  # bump when the reference's training changes; part of its cache key
FRECHET = "Frechet distance to the pool"
log = logging.getLogger(__name__)


def isolated_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """A fork of torch's global RNG (the CPU's, and ``device``'s when it is a GPU): what is drawn
    inside leaves the streams every run draws from as they were."""
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=gpus)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussian fits of features ``a`` [n, d] and ``b`` [m, d] (n, m >= 2):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64, squared feature units."""
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


@dataclass
class Reference:
    """The reference F (eval mode, frozen), trained ``epochs`` epochs on ``samples`` labeled pool
    samples, with ``scores`` its task metrics on the test set."""

    model: nn.Module
    epochs: int
    samples: int
    scores: dict[str, float]


def reference_key(task: Task, data: TaskData, seed: int) -> str:
    """A digest of everything the reference F depends on: task, labeled pool, seed, recipe."""
    protocol = task.protocol
    settings = {
        "task": task.name,
        "seed": seed,
        "epochs": REFERENCE_EPOCHS,
        "batch_size": protocol.batch_size,
        "lr": protocol.lr,
        "optimizer": optimizer_name(protocol.optimizer),
        "optimizer_options": protocol.optimizer_options,
        "version": VERSION,
        "pool": [list(data.pool_x.shape), str(data.pool_x.dtype), str(data.pool_y.dtype)],
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for tensor in (data.pool_x, data.pool_y):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def reference_model(task: Task, data: TaskData, seed: int) -> Reference:
    """The task's reference F for this labeled pool: loaded (``weights_only``) from
    ``<cache_dir>/realism/`` when trained before, else trained now and kept there."""
    device = data.pool_x.device
    path = (
        None
        if task.cache_dir is None
        else (Path(task.cache_dir) / "realism" / f"reference-{task.name}-{reference_key(task, data, seed)}.pt")
    )
    with isolated_rng(device):
        if path is not None and path.exists():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                model = task.make_model().to(device)
                model.load_state_dict(saved["state_dict"])
                return Reference(model.eval().requires_grad_(False), saved["epochs"], saved["samples"], saved["scores"])
            except Exception as err:  # a corrupt or stale file: train again and replace it
                log.warning("cached reference model %s is unreadable (%s); training it again", path, err)
        torch.manual_seed(seed)
        model = task.make_model().to(device)
        train(task, model, data.pool_x, data.pool_y, seed)
    model.eval().requires_grad_(False)
    scores = task.scores(batched(model, data.test_x), data.test_y)
    reference = Reference(model, REFERENCE_EPOCHS, len(data.pool_x), scores)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(
                {
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "epochs": reference.epochs,
                    "samples": reference.samples,
                    "scores": scores,
                },
                tmp,
            )
            tmp.replace(path)
        except OSError as err:  # a read-only or full cache: go on with the model in memory
            log.warning("could not cache the reference model in %s (%s)", path.parent, err.strerror or err)
    return reference


def train(task: Task, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> None:
    """:data:`REFERENCE_EPOCHS` epochs of the task's loss on (x, y) in shuffled mini-batches, with
    the task's protocol optimizer, learning rate and batch size (the harness's training loop)."""
    protocol = task.protocol
    optimizer = make_optimizer(protocol.optimizer, model.parameters(), protocol.lr, protocol.optimizer_options)
    with torch.enable_grad():
        train_epochs(
            model,
            optimizer,
            task.loss,
            x,
            y,
            REFERENCE_EPOCHS,
            protocol.batch_size,
            torch.Generator().manual_seed(seed),
        )


@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn`` over ``x`` [N, ...] in batches of :data:`BATCH`, concatenated [N, ...]."""
    return torch.cat([fn(batch) for batch in x.split(BATCH)])


def task_realism(task: Task, sets: RealismSets, data: TaskData, seed: int) -> Realism:
    """The task's own realism measures (:meth:`Task.realism`), else the Frechet distance in its
    reference F's features (:func:`frechet_realism`), else (no embeddings) none, with a note."""
    own = task.realism(sets, data, seed)
    if own is not None:
        return own
    if Capability.EMBEDDINGS not in task.capabilities:
        return Realism(notes=[f"task {task.name!r} offers no embeddings and measures no realism of its own"])
    return frechet_realism(task, sets, data, seed)


def frechet_realism(task: Task, sets: RealismSets, data: TaskData, seed: int) -> Realism:
    """The Frechet distance of each set in ``sets`` to its pool samples, in the ``embed`` features
    of the task's reference F (:func:`reference_model`)."""
    reference = reference_model(task, data, seed)
    embedded = {name: batched(reference.model.embed, x) for name, x in sets.named().items()}
    pool = embedded.pop("pool")
    scores = ", ".join(f"{name} {value:.4g}" for name, value in reference.scores.items())
    protocol = task.protocol
    return Realism(
        values={FRECHET: {name: frechet_distance(pool, f) for name, f in embedded.items()}},
        about={
            FRECHET: f"between Gaussian fits of the reference F's {pool.shape[1]}-d embed features of a set "
            f"and of the pool samples, squared feature units: 0 is the same mean and covariance, "
            f"the test set's is the floor that finite real samples give"
        },
        notes=[
            f"reference F: the {task.name} target model, trained {reference.epochs} epochs on all "
            f"{reference.samples} labeled pool samples ({optimizer_name(protocol.optimizer)}, lr {protocol.lr:g}, "
            f"batch {protocol.batch_size}, seed {seed}); on the {len(data.test_x)} test samples: {scores}"
        ],
    )
