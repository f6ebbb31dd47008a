"""The contract checks' synthetic task :class:`Blobs` (public as ``bench.testing.Blobs``, its
home in records such as a run's manifest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from tasks.base import Capability, Labels, Metric, Protocol, Task, TaskData, VAESpec


class Blobs(Task):
    """Four Gaussian blobs in 8-D squashed into [0, 1]: a classification task with dropout, a
    tiny VAE and a labeler for synthetic inputs (the nearest blob centre); trains in milliseconds."""

    name = "blobs"
    description = "four Gaussian blobs in 8-D (the contract tests' synthetic task)"
    metric = Metric("accuracy", higher_is_better=True, label="accuracy (%)", bounds=(0.0, 100.0))
    protocol = Protocol(initial=20, increment=10, rounds=3, epochs=2, batch_size=16, lr=1e-2)
    capabilities = frozenset(
        {
            Capability.PROBABILITIES,
            Capability.EMBEDDINGS,
            Capability.GENERATIVE,
            Capability.SYNTHETIC_LABELS,
            Capability.DROPOUT,
        }
    )
    generative = VAESpec(hidden=32, latent_dim=2, epochs=20, batch_size=32, lr=1e-2)
    pool_size = 400

    def __init__(self) -> None:
        self.centres = torch.randn(4, 8, generator=torch.Generator().manual_seed(123)) * 3

    def load(self, data_root: Path | None = None, download: bool = True) -> TaskData:
        generator = torch.Generator().manual_seed(124)

        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.arange(n) % 4
            return torch.sigmoid(self.centres[y] + torch.randn(n, 8, generator=generator)), y

        return TaskData(*draw(self.pool_size), *draw(200))

    def label_inputs(self, x: Tensor) -> Labels:
        """The class of the nearest (squashed) blob centre."""
        targets = torch.cdist(x, torch.sigmoid(self.centres.to(x.device))).argmin(dim=1)
        return Labels(x, targets, np.ones(len(x), dtype=bool), {})

    def make_model(self) -> nn.Module:
        return DropoutMLP()

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nnf.cross_entropy(output, target)

    def scores(self, output: Tensor, target: Tensor) -> dict[str, float]:
        return {"accuracy": 100.0 * (output.argmax(1) == target).sum().item() / len(target)}


class DropoutMLP(nn.Module):
    """8 -> 16 (ReLU, dropout 0.25) -> 4: :class:`Blobs`'s target model."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.25))
        self.head = nn.Linear(16, 4)

    def embed(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))
