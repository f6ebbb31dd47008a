"""The task ``deepal-mnist``: MNIST trained with the recipe of DeepAL (Huang, "DeepAL: Deep Active
Learning in Python", 2021; github.com/ej0cl6/deep-active-learning).

DeepAL's MNIST net (``Net1`` / ``MNIST_Net``): conv 1->10 5x5, max-pool 2, ReLU; conv 10->20 5x5,
``Dropout2d``, max-pool 2, ReLU; flatten (320); fc 320->50, ReLU (the embedding); dropout; fc
50->10. Its recipe: SGD, lr 0.01, momentum 0.5, batches of 64, 10 epochs, and a new net every
round (DeepAL builds ``self.net()`` afresh in each ``train`` call): ``start="fresh"`` here, a new
seeded initialisation per round, the same for every strategy of a repeat. The protocol is 500
initial samples, +500 per round, 10 rounds (DeepAL's own defaults label more: 10,000 + 1,000).

Input format. DeepAL feeds the net ``ToTensor()`` then ``Normalize((0.1307,), (0.3081,))``. The
harness stores MNIST as the built-in ``mnist`` task loads it (float images in [0, 1]), and the
generative strategies (snn, si) train their VAE on, and generate, images in that range; so the
normalisation is the net's first step (:meth:`DeepALNet.forward`), which is exactly DeepAL's
input to the first convolution, for pool images and generated ones alike.

Everything else is the built-in MNIST task's: the data (official 60k pool, 10k test), loss,
accuracy metric and generative-model settings, so that snn and si apply too; the capability
:attr:`~tasks.base.Capability.DROPOUT` says F has dropout layers (for Monte Carlo dropout, e.g.
``bald``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from tasks import register_task
from tasks.base import Capability, Protocol, unit_images
from tasks.mnist import MNISTTask

#: DeepAL's ``transforms.Normalize((0.1307,), (0.3081,))``: MNIST's pixel mean and standard deviation.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class DeepALNet(nn.Module):
    """DeepAL's MNIST net, layer for layer (attribute names as DeepAL's, so its state dicts
    load), normalising its [0, 1] input first as DeepAL's data transform did."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()  # p = 0.5
        self.fc1 = nn.Linear(320, 50)
        self.fc1_drop = nn.Dropout()  # DeepAL's F.dropout(e1, training=self.training), p = 0.5
        self.fc2 = nn.Linear(50, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """The 50-d features after fc1 and its ReLU [B, 50] (DeepAL's embedding ``e1``)."""
        x = (unit_images(x) - MNIST_MEAN) / MNIST_STD
        x = nnf.relu(nnf.max_pool2d(self.conv1(x), 2))
        x = nnf.relu(nnf.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        return nnf.relu(self.fc1(x.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, 10] of images [B, 1, 28, 28] in [0, 1]."""
        return self.fc2(self.fc1_drop(self.embed(x)))


@register_task
class DeepALMNISTTask(MNISTTask):
    name = "deepal-mnist"
    description = "MNIST (60k pool, 10k test) with DeepAL's net and recipe (SGD, fresh net each round), accuracy (%)"
    protocol = Protocol(
        initial=500,
        increment=500,
        rounds=10,
        epochs=10,
        batch_size=64,
        lr=0.01,
        optimizer="sgd",
        optimizer_options={"momentum": 0.5},
        start="fresh",
    )
    capabilities = frozenset(
        {Capability.PROBABILITIES, Capability.EMBEDDINGS, Capability.GENERATIVE, Capability.DROPOUT}
    )

    def make_model(self) -> nn.Module:
        # channels-last convolutions, as the built-in MNIST task's LeNet: 1.5x faster training on a CPU
        return DeepALNet().to(memory_format=torch.channels_last)
