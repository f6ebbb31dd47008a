"""The one place that builds what a run needs from its configuration: the checked plan, the
process-wide torch settings, the task's data on the device and the generative model.

Every command and worker calls :func:`assemble` (the driver, each worker process, ``perf``,
``latent``, ``show``, and the contract checks of :mod:`bench.testing`), so they all run on the same
objects. The data are loaded on first use (so the driver can claim its run folder first), and
so is the generative model: trained on the pool (once per task, pool, seed and settings, then
loaded from the cache), or rebuilt from the weights the driver sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from bench.generative.base import GenerativeModel
from bench.generative.cache import cache_path, load_or_train_at
from bench.paths import cache_root
from bench.run import checkpoint
from bench.run.config import RunConfig
from bench.run.plan import Plan, load_data, plan_run
from tasks.base import TaskData


@dataclass
class Assembly:
    """A run's plan, and (built on first use) its data and generative model."""

    plan: Plan
    #: The generative model's weights as the driver serialised them (:func:`generative_weights`);
    #: None: load it from the cache, or train it there.
    weights: bytes | None = None

    @cached_property
    def data(self) -> TaskData:
        """The task's data (a subset if asked), checked against the protocol and for non-finite
        values (once, on the device)."""
        data = load_data(self.plan)
        data.check_finite(self.plan.task.name)
        return data

    @cached_property
    def _generative(self) -> tuple[GenerativeModel | None, Path | None]:
        spec = self.plan.generative
        if spec is None:
            return None, None
        pool_x = self.data.pool_x
        if self.weights is not None:
            model = spec.build(tuple(pool_x.shape[1:]))
            model.load_state_dict(checkpoint.from_bytes(self.weights))
            return model.to(pool_x.device).eval().requires_grad_(False), None
        path = cache_path(self.plan.task.name, pool_x, spec, self.plan.config.seed, cache_root() / "generative")
        model = load_or_train_at(path, pool_x, spec, self.plan.config.seed, progress=not self.plan.config.quiet)
        return model, path

    @property
    def generative(self) -> GenerativeModel | None:
        """The generative model the chosen strategies need (eval mode, frozen, on the data's
        device), or None when none needs one."""
        return self._generative[0]

    @property
    def generative_file(self) -> Path | None:
        """Where the generative model is cached (None: no model, or one sent as weights)."""
        return self._generative[1]


def assemble(config: RunConfig, weights: bytes | None = None) -> Assembly:
    """Check ``config`` (ConfigError naming the problem and fix) and apply its torch settings to
    this process; the data and the generative model (from ``weights`` when given) follow on
    first use."""
    plan = plan_run(config)
    apply_torch_settings(plan)
    return Assembly(plan, weights)


def generative_weights(model: GenerativeModel) -> bytes:
    """A trained generative model's weights as bytes, for workers that lack the cache."""
    return checkpoint.to_bytes(model.state_dict())


def apply_torch_settings(plan: Plan) -> None:
    """The process-wide torch settings of ``plan``: its CPU threads (``--threads``), and on CUDA
    deterministic kernels unless ``--nondeterministic`` (see :func:`reproducible_kernels`)."""
    if plan.config.threads is not None:
        torch.set_num_threads(plan.config.threads)
    reproducible_kernels(plan.device, plan.config.nondeterministic)


def reproducible_kernels(device: torch.device, nondeterministic: bool) -> None:
    """On CUDA, make the same command give the same numbers: deterministic algorithms (an op
    without one raises), cuBLAS with a fixed workspace, no cuDNN autotuning. With
    ``nondeterministic`` the fastest kernels run instead and results vary from run to run.
    CPU runs are deterministic at a fixed thread count either way."""
    if device.type != "cuda":
        return
    if nondeterministic:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any matmul
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
