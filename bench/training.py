"""Training and batched inference of the target model F on tensors that live on the device."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from tasks.base import OptimizerSpec

#: Batch size of inference (test-set scoring, pool probabilities and embeddings) on a CPU. Small
#: batches keep activations in cache: LeNet scores MNIST 1.6x faster on a CPU in batches of 256
#: than of 1024 (same outputs, bit for bit).
INFERENCE_BATCH = 256
#: The same on a GPU, where a large batch keeps the device busy (VGG-16 on CIFAR-10 included).
GPU_INFERENCE_BATCH = 2048


def inference_batch(device: torch.device) -> int:
    """The inference batch size for ``device``."""
    return GPU_INFERENCE_BATCH if device.type == "cuda" else INFERENCE_BATCH


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` class called ``name`` in any case (``"sgd"`` -> ``torch.optim.SGD``);
    an unknown name raises ValueError listing the known ones."""
    known = {k.lower(): v for k, v in vars(torch.optim).items()
             if isinstance(v, type) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer}
    try:
        return known[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; torch.optim has {', '.join(sorted(known))}") from None


def make_optimizer(spec: OptimizerSpec, parameters, lr: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    """An optimizer over ``parameters``: ``spec`` is a ``torch.optim`` name or a factory
    ``(parameters, lr=..., **options)``, as a task's protocol declares it."""
    factory = optimizer_class(spec) if isinstance(spec, str) else spec
    return factory(parameters, lr=lr, **options)


def optimizer_name(spec: OptimizerSpec) -> str:
    """How the manifest records an optimizer: its torch.optim name, or a factory's import path."""
    return spec if isinstance(spec, str) else f"{spec.__module__}:{spec.__qualname__}"


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
