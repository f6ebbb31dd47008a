"""MNIST digit classification with the paper's LeNet (Table S7); metric: test accuracy (%).

The official 60k training images form the pool and the official 10k the test set, read through
torchvision's ``MNIST`` class (torchvision layout ``<data_root>/MNIST/raw``; downloaded there on
first use when the machine is online).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from tasks.base import Capability, DataError, DataNotFoundError, Metric, Protocol, Task, TaskData, VAESpec
from tasks.registry import register_task

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class LeNet(nn.Module):
    """Table S7: conv5x5(1->20), pool, conv5x5(20->50), pool, fc 800->500, ReLU, fc 500->10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 20, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(800, 500),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(500, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features [B, 500] (after the fc 800->500 ReLU)."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, 10] of images [B, 1, 28, 28] in [0, 1]."""
        return self.classifier(self.features(x))


def read_mnist(data_root: Path, download: bool) -> TaskData:
    """The official split as float images [N, 1, 28, 28] in [0, 1] and int64 labels [N]."""
    from torchvision.datasets import MNIST

    raw = Path(data_root) / "MNIST" / "raw"
    try:
        parts = [MNIST(str(data_root), train=train, download=download) for train in (True, False)]
    except Exception as err:  # torchvision raises RuntimeError or URLError/OSError on download
        missing = [f for f in RAW_FILES if not (raw / f).exists()]
        raise DataNotFoundError(
            f"MNIST not found: looked in {raw} for {', '.join(missing) or 'readable files'} ({err}). "
            f"Put the four official files (torchvision layout) there, run once with internet access "
            f"to download them, or point --data-root (or the BENCH_DATA environment variable) at a "
            f"folder that holds MNIST/raw."
        ) from err
    (train_x, train_y), (test_x, test_y) = ((p.data, p.targets) for p in parts)
    for labels, name in ((train_y, "train-labels-idx1-ubyte"), (test_y, "t10k-labels-idx1-ubyte")):
        if len(labels) and int(labels.max()) > 9:
            at = int(labels.argmax())
            raise DataError(
                f"{raw / name} holds label {int(labels[at])} at index {at}: MNIST labels are 0-9. "
                f"The file is damaged: replace it with the official one"
            )
    as_images = lambda x: x.unsqueeze(1).float().div_(255.0)  # noqa: E731
    return TaskData(as_images(train_x), train_y.long(), as_images(test_x), test_y.long())


@register_task
class MNISTTask(Task):
    name = "mnist"
    description = "MNIST digits (60k pool, 10k test), LeNet (Table S7), accuracy (%)"
    metric = Metric("accuracy", higher_is_better=True, label="test accuracy (%)", decimals=1, bounds=(0.0, 100.0))
    protocol = Protocol(initial=500, increment=300, rounds=10, epochs=10, batch_size=64, lr=1e-3)
    capabilities = frozenset({Capability.PROBABILITIES, Capability.EMBEDDINGS, Capability.GENERATIVE})
    generative = VAESpec(hidden=400, latent_dim=3, epochs=30, batch_size=128, lr=1e-3)  # Tables S9, S10
    pool_size = 60_000

    def load(self, data_root: Path, download: bool = True) -> TaskData:
        return read_mnist(data_root, download)

    def make_model(self) -> nn.Module:
        # channels-last convolutions run markedly faster on CPUs (oneDNN) and GPUs alike
        return LeNet().to(memory_format=torch.channels_last)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nnf.cross_entropy(output, target)

    def scores(self, output: Tensor, target: Tensor) -> dict[str, float]:
        correct = (output.argmax(dim=1) == target).sum().item()
        return {"accuracy": 100.0 * correct / len(target)}
