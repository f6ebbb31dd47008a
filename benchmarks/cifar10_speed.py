"""CIFAR-10 training speed: the harness's loop against the bare computation, and alpha-GAN steps.

    python benchmarks/cifar10_speed.py [--device auto] [--batch-sizes 128,512] [--dtypes float32,bfloat16]

For each batch size and precision it prints the samples/s of

- **bare**: VGG-16-BN forward, backward and Adam step on one fixed batch already on the device;
- **harness**: ``bench.training.train_epochs`` over uint8 images on the device (shuffling,
  gathering each batch, converting and normalising it on the fly, as a run does), and its rate
  as a share of bare (the target is at least 80%);
- **alpha-GAN**: one training step of encoder, generator and both discriminators
  (``bench.generative.alphagan``), per image.

Random data, so nothing is read from disk; each figure is the best of ``--repeats`` timings after
a warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as nnf

from bench.generative.alphagan import AlphaGAN, _step
from bench.run.config import resolve_device
from bench.training import train_epochs
from tasks.base import AlphaGANSpec
from tasks.cifar10 import CIFAR10Task


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(fn, samples: int, repeats: int, device: torch.device) -> float:
    """Samples per second of ``fn`` (which processes ``samples``), best of ``repeats`` after a warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return samples / best


def vgg_rates(device: torch.device, batch: int, dtype: torch.dtype, steps: int, repeats: int) -> tuple[float, float]:
    """Samples/s of the bare VGG-16 step and of the harness's training loop."""
    task = CIFAR10Task()
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batch * steps, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (batch * steps,), device=device)
    model = task.make_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    fixed = ((images[:batch].float() / 255.0).contiguous(memory_format=torch.channels_last), labels[:batch])
    bare_model = model.features, model.classifier

    def bare() -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(**autocast):
                loss = nnf.cross_entropy(bare_model[1](bare_model[0](fixed[0])), fixed[1])
            loss.backward()
            optimizer.step()

    shuffle = torch.Generator().manual_seed(0)
    harness = lambda: train_epochs(model, optimizer, task.loss, images, labels, 1, batch, shuffle, dtype=dtype)  # noqa: E731
    return (best_rate(bare, batch * steps, repeats, device), best_rate(harness, batch * steps, repeats, device))


def alphagan_rate(device: torch.device, batch: int, steps: int, repeats: int) -> float:
    """Images/s of alpha-GAN training steps (all four parts, float32)."""
    spec = AlphaGANSpec(batch_size=batch)
    torch.manual_seed(0)
    model = AlphaGAN(spec).to(device, memory_format=torch.channels_last).train()
    fused = {"fused": True} if device.type == "cuda" else {}
    adam = lambda *parts: torch.optim.Adam([p for m in parts for p in m.parameters()], lr=spec.lr, **fused)  # noqa: E731
    optimizers = adam(model.encoder, model.generator), adam(model.image_discriminator), adam(model.code_discriminator)
    x = AlphaGAN.to_signed(torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device))
    noise = torch.Generator(device=device).manual_seed(0)

    def run() -> None:
        for _ in range(steps):
            _step(model, x, spec, *optimizers, noise)

    return best_rate(run, batch * steps, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="128", help="comma-separated batch sizes")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument("--steps", type=int, default=4, help="training steps per timing")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; torch {torch.__version__}; TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
        f"cudnn {torch.backends.cudnn.allow_tf32}"
    )
    print(f"{'model':<10} {'batch':>6} {'dtype':>9} {'bare/s':>9} {'harness/s':>10} {'share':>6}")
    for batch in map(int, args.batch_sizes.split(",")):
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            bare, harness = vgg_rates(device, batch, dtype, args.steps, args.repeats)
            print(f"{'VGG-16-BN':<10} {batch:>6} {dtype_name:>9} {bare:>9.0f} {harness:>10.0f} {harness / bare:>6.0%}")
        rate = alphagan_rate(device, batch, args.steps, args.repeats)
        print(f"{'alpha-GAN':<10} {batch:>6} {'float32':>9} {rate:>9.0f}")


if __name__ == "__main__":
    main()
