"""Run configuration and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.paths import default_data_root
from tasks.base import Protocol


class ConfigError(ValueError):
    """A run that cannot work as configured; the message names the problem and the fix."""


@dataclass
class RunConfig:
    """Everything that defines a run; ``None`` protocol fields take the task's defaults."""

    task: str
    strategies: list[str]
    rounds: int | None = None
    initial: int | None = None
    increment: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    repeats: int = 1
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    score_dtype: str = "auto"  # precision of pool scoring for selection: auto, float32 or bfloat16
    warm_start: bool = True
    augment: bool | None = None  # None: the task's default
    train_dtype: str = "float32"  # autocast precision of training F: float32, bfloat16 or auto
    subset: int | None = None
    data_root: Path = field(default_factory=default_data_root)
    download: bool = True
    out: Path | None = None
    quiet: bool = False
    strategy_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int | None = None  # overrides the task's generative model's latent dimension
    generative_options: dict[str, Any] = field(default_factory=dict)  # other fields of its spec

    def protocol(self, defaults: Protocol) -> Protocol:
        """The task's default protocol with this config's overrides."""
        return defaults.replace(rounds=self.rounds, initial=self.initial, increment=self.increment,
                                epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, augment=self.augment)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; "
                          "use --device cpu (or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


SCORE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (a GPU that supports it; a CPU with
    AVX512-BF16 or AMX), where scoring in bfloat16 runs 2-3x faster than in float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_score_dtype(name: str, device: torch.device, flag: str = "--score-dtype") -> torch.dtype:
    """``auto`` -> bfloat16 where the device computes it natively, else float32."""
    if name == "auto":
        return torch.bfloat16 if fast_bfloat16(device) else torch.float32
    if name not in SCORE_DTYPES:
        raise ConfigError(f"unknown {flag} {name!r}; use auto, float32 or bfloat16")
    return SCORE_DTYPES[name]


def check_protocol(protocol: Protocol, pool_size: int, where: str) -> None:
    """Refuse impossible sizes: non-positive values, or a budget larger than the pool."""
    for name in ("rounds", "initial", "epochs", "batch_size"):
        if getattr(protocol, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(protocol, name)})")
    if protocol.increment < 1 and protocol.rounds > 1:
        raise ConfigError(f"--increment must be at least 1 when --rounds is more than 1 (got {protocol.increment})")
    if protocol.lr <= 0:
        raise ConfigError(f"--lr must be positive (got {protocol.lr})")
    budget = protocol.initial + (protocol.rounds - 1) * protocol.increment
    if budget > pool_size:
        raise ConfigError(
            f"impossible sizes: initial + (rounds - 1) * increment = {protocol.initial} + "
            f"({protocol.rounds} - 1) * {protocol.increment} = {budget} labeled samples, but {where} "
            f"has only {pool_size}; lower --initial, --increment or --rounds"
            + (", or raise --subset" if "subset" in where else "")
        )
