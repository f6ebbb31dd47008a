"""Run configuration and its validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.paths import default_data_root
from tasks.base import START_MODES, Protocol, make_optimizer, optimizer_name


class ConfigError(ValueError):
    """A run that cannot work as configured; the message names the problem and the fix."""


#: Upper bounds of integer settings: beyond them a value is a typo, not a plan (a billion torch
#: threads or repeats would exhaust the machine before any message could say why).
LIMITS = {
    "rounds": 10_000,
    "epochs": 100_000,
    "batch_size": 2**24,
    "repeats": 10_000,
    "threads": 1024,
    "latent_dim": 4096,
    "seed": 2**63 - 1,
    "jobs": 1024,
    "validation": 10_000_000,
}


#: The largest learning rate accepted: beyond it every optimizer here diverges at once.
MAX_LR = 100.0


def check_limit(name: str, value: int | None) -> None:
    """Refuse ``value`` of setting ``name`` above :data:`LIMITS` (None passes)."""
    if value is not None and value > LIMITS[name]:
        raise ConfigError(f"--{name.replace('_', '-')} {value} is out of range: at most {LIMITS[name]}")


def check_finite(flag: str, value: Any) -> None:
    """Refuse a float that is NaN or infinite (a typo or an overflow, never a setting)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag} {value}: not a finite number; give a finite value")


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
    start: str | None = None  # warm, reset or fresh; None: the task's
    optimizer: str | None = None  # a torch.optim name; None: the task's (with its options)
    optimizer_options: dict[str, Any] = field(default_factory=dict)  # added to (or replacing) the task's
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
    nondeterministic: bool = False  # on CUDA: allow nondeterministic kernels (faster, results vary)
    diagnostics: bool = True  # measure each selection's picks (bench.run.diagnostics); changes no metric value
    validation: int = 0  # labeled pool samples held out per repeat to validate F on (never selected or trained on)
    imbalance: float | None = None  # keep a seeded long-tailed pool, head/tail ratio R (bench.run.imbalance)

    @classmethod
    def from_manifest(cls, saved: dict[str, Any]) -> RunConfig:
        """The configuration a run folder's ``manifest.json`` recorded (its ``config`` entry); a
        null ``data_root`` (an absolute one is not recorded) is the default data root."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - names - {"warm_start"})
        if unknown:
            raise ConfigError(
                f"the manifest's config has settings this version does not know "
                f"({', '.join(unknown)}); resume it with the version that started it"
            )
        values = dict(saved)
        values.setdefault("diagnostics", False)  # runs started before diagnostics have no columns for them
        if "warm_start" in values:  # manifests before --start
            values["start"] = None if values.pop("warm_start") else "reset"
        if values.get("data_root") is None:
            values.pop("data_root", None)
        else:
            values["data_root"] = Path(values["data_root"])
        if values.get("out") is not None:
            values["out"] = Path(values["out"])
        return cls(**values)

    def protocol(self, defaults: Protocol) -> Protocol:
        """The task's protocol and recipe with this config's overrides. Another optimizer than
        the task's drops the task's optimizer options; ``optimizer_options`` are added last."""
        options = dict(defaults.optimizer_options)
        if self.optimizer is not None and self.optimizer.lower() != optimizer_name(defaults.optimizer).lower():
            options = {}
        options.update(self.optimizer_options)
        return defaults.replace(
            rounds=self.rounds,
            initial=self.initial,
            increment=self.increment,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            augment=self.augment,
            start=self.start,
            optimizer=self.optimizer,
            optimizer_options=options,
        )


EXECUTORS = ("local", "ray")
#: Experiment trackers a run can be mirrored into (``--track``, :mod:`bench.run.tracking`).
TRACKERS = ("mlflow",)


@dataclass
class Execution:
    """How a run's units are executed; none of it changes a number in the results."""

    jobs: int = 1  # local worker processes running units side by side
    executor: str = "local"  # local (the driver and --jobs workers) or ray
    ray_address: str | None = None  # a Ray cluster's address (auto: the one this machine joined); None starts one
    cpus_per_job: float | None = None  # Ray: CPUs a unit asks for (default: its threads)
    gpus_per_job: float | None = None  # Ray: GPUs a unit asks for, fractions share one (default: 0, or 1 on cuda)
    keep_checkpoints: bool = False  # keep finished units' checkpoints
    unit_timeout: float | None = None  # seconds a unit may run before it is stopped and failed; None: no limit
    track: str | None = None  # mirror the run into this experiment tracker (TRACKERS); None: as its manifest says
    track_uri: str | None = None  # the tracker's store or server; None: the manifest's, else the tracker's default

    def check(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1 (got {self.jobs})")
        check_limit("jobs", self.jobs)
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown --executor {self.executor!r}; use {' or '.join(EXECUTORS)}")
        if self.executor != "ray":
            for flag, value in (
                ("--ray-address", self.ray_address),
                ("--cpus-per-job", self.cpus_per_job),
                ("--gpus-per-job", self.gpus_per_job),
            ):
                if value is not None:
                    raise ConfigError(f"{flag} applies to --executor ray only; add --executor ray or drop it")
        elif self.jobs != 1:
            raise ConfigError(
                "--jobs is for the local executor; with --executor ray, Ray runs as many units "
                "at once as the cluster has room for (see --cpus-per-job, --gpus-per-job)"
            )
        for flag, value in (("--cpus-per-job", self.cpus_per_job), ("--gpus-per-job", self.gpus_per_job)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{flag} must be a non-negative number (got {value})")
        if self.cpus_per_job == 0:
            raise ConfigError("--cpus-per-job must be more than 0 (a unit needs a CPU)")
        if self.unit_timeout is not None and not (math.isfinite(self.unit_timeout) and self.unit_timeout > 0):
            raise ConfigError(f"--unit-timeout must be a positive number of seconds (got {self.unit_timeout})")
        if self.track is not None and self.track not in TRACKERS:
            raise ConfigError(f"unknown --track {self.track!r}; use {' or '.join(TRACKERS)}")
        if self.track_uri is not None and not self.track_uri.strip():
            raise ConfigError("--track-uri is empty; give a tracking server or store, e.g. --track-uri mlruns")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device cpu (or auto)")
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


def check_protocol(protocol: Protocol, pool_size: int, where: str, validation: int = 0) -> None:
    """Refuse impossible sizes: non-positive values, or a budget (with ``validation`` held-out
    samples) larger than the pool."""
    for name in ("rounds", "initial", "epochs", "batch_size"):
        if getattr(protocol, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(protocol, name)})")
    for name in ("rounds", "epochs", "batch_size"):
        check_limit(name, getattr(protocol, name))
    for key, value in protocol.optimizer_options.items():
        check_finite(f"--optimizer-option {key}=", value)
    if protocol.increment < 1 and protocol.rounds > 1:
        raise ConfigError(f"--increment must be at least 1 when --rounds is more than 1 (got {protocol.increment})")
    if not (math.isfinite(protocol.lr) and 0 < protocol.lr <= MAX_LR):
        raise ConfigError(f"--lr must be positive, finite and at most {MAX_LR:g} (got {protocol.lr})")
    if protocol.start not in START_MODES:
        raise ConfigError(f"unknown start mode {protocol.start!r}; use --start {', '.join(START_MODES)}")
    try:
        make_optimizer(
            protocol.optimizer, [torch.zeros(1, requires_grad=True)], protocol.lr, protocol.optimizer_options
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"optimizer {optimizer_name(protocol.optimizer)} with options "
            f"{protocol.optimizer_options or '{}'}: {err}; fix --optimizer / --optimizer-option"
        ) from None
    budget = protocol.initial + (protocol.rounds - 1) * protocol.increment
    held = f" + {validation} validation samples = {budget + validation}" if validation else ""
    if budget + validation > pool_size:
        raise ConfigError(
            f"impossible sizes: initial + (rounds - 1) * increment = {protocol.initial} + "
            f"({protocol.rounds} - 1) * {protocol.increment} = {budget} labeled samples{held}, but {where} "
            f"has only {pool_size}; lower --initial, --increment"
            + (", --rounds or --validation" if validation else " or --rounds")
            + (", or raise --subset" if "subset" in where else "")
            + (", or lower --imbalance" if "imbalance" in where else "")
        )
