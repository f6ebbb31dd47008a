"""Training and batched inference of the target model F on tensors that live on the device."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

#: Batch size of inference (test-set scoring, pool probabilities and embeddings) on a CPU. Small
#: batches keep activations in cache: LeNet scores MNIST 1.6x faster on a CPU in batches of 256
#: than of 1024 (same outputs, bit for bit).
INFERENCE_BATCH = 256
#: The same on a GPU, where a large batch keeps the device busy (VGG-16 on CIFAR-10 included).
GPU_INFERENCE_BATCH = 2048


def inference_batch(device: torch.device) -> int:
    """The inference batch size for ``device``."""
    return GPU_INFERENCE_BATCH if device.type == "cuda" else INFERENCE_BATCH


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Train ``model`` for ``epochs`` passes over (x, y) in shuffled mini-batches.

    Shuffling (and ``augment(batch, generator)``, when given) draws from ``generator`` (a CPU
    generator), so runs are reproducible. The forward pass runs under autocast in ``dtype``
    unless it is float32. A trailing batch of a single sample is skipped (batch norm cannot train
    on it). Nothing here waits for the device: the loss is never read back.
    """
    model.train()
    n = len(x)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < 2 and n > 1:
                continue
            inputs = x[batch] if augment is None else augment(x[batch], generator)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = loss_fn(model(inputs), y[batch])
            loss.backward()
            optimizer.step()


@torch.inference_mode()
def predict(
    model: nn.Module,
    x: Tensor,
    batch_size: int | None = None,
    fn: Callable[[Tensor], Tensor] | None = None,
    dropout: bool = False,
) -> Tensor:
    """``fn(batch)`` (default: ``model(batch)``) with ``model`` in eval mode (its dropout layers
    active with ``dropout``), over all of ``x`` in batches (default: :func:`inference_batch` of
    ``x``'s device), concatenated ([N, ...])."""
    fn = fn or model
    batch_size = batch_size or inference_batch(x.device)
    was_training = model.training
    model.eval()
    if dropout:
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.train()
    try:
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
