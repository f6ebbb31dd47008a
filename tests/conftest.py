"""Shared fixtures: a tiny in-memory classification task, and the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from tasks import TASKS
from tasks.base import Capability, GenerativeSpec, Labels, Metric, Protocol, Task, TaskData

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Blobs(Task):
    """Four Gaussian blobs in 8-D squashed into [0, 1]: a classification task with a tiny VAE
    and a labeler for synthetic inputs (the nearest blob centre), that trains in milliseconds."""

    name = "blobs"
    description = "four Gaussian blobs in 8-D (tests only)"
    metric = Metric("accuracy", higher_is_better=True, label="accuracy (%)")
    protocol = Protocol(initial=20, increment=10, rounds=3, epochs=2, batch_size=16, lr=1e-2)
    capabilities = frozenset({Capability.PROBABILITIES, Capability.EMBEDDINGS, Capability.GENERATIVE,
                              Capability.SYNTHETIC_LABELS})
    generative = GenerativeSpec(hidden=32, latent_dim=2, epochs=20, batch_size=32, lr=1e-2)

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(123)
        self.centres = torch.randn(4, 8, generator=self.generator) * 3

    def load(self, data_root: Path, download: bool = True) -> TaskData:
        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.arange(n) % 4
            return torch.sigmoid(self.centres[y] + torch.randn(n, 8, generator=self.generator)), y

        return TaskData(*draw(400), *draw(200))

    def label_inputs(self, x: Tensor) -> Labels:
        """The class of the nearest (squashed) blob centre."""
        targets = torch.cdist(x, torch.sigmoid(self.centres)).argmin(dim=1)
        return Labels(x, targets, np.ones(len(x), dtype=bool), {})

    def make_model(self) -> nn.Module:
        return MLP()

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nnf.cross_entropy(output, target)

    def scores(self, output: Tensor, target: Tensor) -> dict[str, float]:
        return {"accuracy": 100.0 * (output.argmax(1) == target).sum().item() / len(target)}


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def embed(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@pytest.fixture
def blobs_task():
    """Registers the ``blobs`` task for the duration of a test."""
    TASKS.add("blobs", Blobs)
    yield Blobs()
    TASKS.remove("blobs")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """``../shared/data`` holding the official MNIST; tests using it skip when it is absent."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {SHARED_DATA}/MNIST/raw (the shared data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """``../shared/data`` holding the CIFAR-10 JPEG zip; tests using it skip when it is absent."""
    if not (SHARED_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip(f"CIFAR-10 not found at {SHARED_DATA}/cifar10-jpeg.zip (the shared data folder)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Trained models and labels go to a per-session folder, never the user's cache."""
    previous = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("BENCH_CACHE")
    else:
        os.environ["BENCH_CACHE"] = previous
