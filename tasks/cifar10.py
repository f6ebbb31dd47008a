"""CIFAR-10 classification with VGG-16 (Table S8) and an alpha-GAN latent space; metric: accuracy (%).

The 50k training images form the pool and the 10k test images the test set (read by
:mod:`tasks.cifar10_data`: the official release, or an ImageFolder copy for offline machines).
Images stay one uint8 tensor [N, 3, 32, 32] on the device; F converts and normalises them per
channel on the fly, so it also accepts the generator's float images in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from tasks.base import AlphaGANSpec, Capability, Metric, Protocol, Task, TaskData, unit_images
from tasks.cifar10_data import read_cifar10
from tasks.registry import register_task

MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the CIFAR-10 training images
STD = (0.2470, 0.2435, 0.2616)
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
CROP_PADDING = 4  # pixels of zero padding around the image before a random 32x32 crop


class VGG16BN(nn.Module):
    """VGG-16 with batch norm (Table S8, read as the standard configuration: its printed channel
    counts have typos): thirteen 3x3 convolutions (padding 1) with BN and ReLU, five 2x2 max
    pools, then a linear layer 512 -> 10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in VGG16:
            if width == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(512, num_classes)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features [B, 512] of images [B, 3, 32, 32] (uint8, or float in [0, 1])."""
        x = (unit_images(x) - self.mean) / self.std
        return self.features(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, 10]."""
        return self.classifier(self.embed(x))


def flip_and_crop(x: Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> Tensor:
    """A random horizontal flip (probability 1/2) and a random crop of the zero-padded image, per
    image, as one gather on ``x``'s device: [B, C, H, W] in, same shape and dtype out. The offsets
    are drawn from the CPU ``generator``."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    dy, dx = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    rows = dy[:, None] + torch.arange(h)  # [B, H] rows of the padded image
    cols = torch.where(flip[:, None], torch.arange(w - 1, -1, -1), torch.arange(w)) + dx[:, None]  # [B, W]
    padded = nnf.pad(x, (padding,) * 4)
    rows, cols = rows.to(x.device), cols.to(x.device)
    index_b = torch.arange(b, device=x.device)[:, None, None]
    return padded[index_b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@register_task
class CIFAR10Task(Task):
    name = "cifar10"
    description = "CIFAR-10 (50k pool, 10k test), VGG-16 with BN (Table S8), alpha-GAN latent space, accuracy (%)"
    metric = Metric("accuracy", higher_is_better=True, label="test accuracy (%)", decimals=1, bounds=(0.0, 100.0))
    protocol = Protocol(initial=1000, increment=1000, rounds=10, epochs=10, batch_size=128, lr=1e-3)
    capabilities = frozenset({Capability.PROBABILITIES, Capability.EMBEDDINGS, Capability.GENERATIVE})
    generative = AlphaGANSpec()  # Tables S1-S5, latent dimension 3
    augmentation = "random horizontal flip and 32x32 crop of the image padded by 4 pixels"
    pool_size = 50_000

    def load(self, data_root: Path, download: bool = True) -> TaskData:
        arrays = read_cifar10(data_root, download, self.cache_dir and self.cache_dir / "decoded")
        as_tensors = (torch.from_numpy(a) for a in (arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y))
        return TaskData(*as_tensors, source=arrays.source)

    def make_model(self) -> nn.Module:
        return VGG16BN().to(memory_format=torch.channels_last)

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return flip_and_crop(x, generator)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nnf.cross_entropy(output, target)

    def scores(self, output: Tensor, target: Tensor) -> dict[str, float]:
        correct = (output.argmax(dim=1) == target).sum().item()
        return {"accuracy": 100.0 * correct / len(target)}
