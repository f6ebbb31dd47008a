"""The run manifest: configuration, seeds, versions, device, git commit, start and end times.

A manifest names no folder of the machine that wrote it, so a committed reference says nothing
about that machine: the cached generative model is named relative to the cache root
(``"file": "generative/vae-mnist-<key>.pt", "under": "cache root"``), the data's source relative
to the data root, ``--data-root`` and ``--out`` as typed when relative and null when absolute, and
the command with each absolute path replaced by ``<absolute path>``.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from bench.generative.cache import cache_relative
from bench.run.config import RunConfig

PACKAGES = ("latent-bench", "torch", "torchvision", "numpy", "scipy", "pandas", "seaborn", "modAL-python", "scikit-fem")


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, Any] | None:
    """The commit of the source tree this package runs from, and whether it has local changes."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


#: What the manifest's command shows in place of an absolute path.
ABSOLUTE = "<absolute path>"


def command_line() -> str:
    """How this process was started, as a user would type it, each absolute path replaced by
    :data:`ABSOLUTE` (``--out /home/me/runs/a`` -> ``--out <absolute path>``)."""
    program = Path(sys.argv[0]).name
    program = "python -m bench" if program == "__main__.py" else program
    return " ".join([program, *map(portable_argument, sys.argv[1:])])


def portable_argument(arg: str) -> str:
    """A command-line argument with an absolute path in it (``/x`` or ``--flag=/x``) replaced by
    :data:`ABSOLUTE`."""
    flag, sep, value = arg.partition("=")
    if arg.startswith("--") and sep and os.path.isabs(value):
        return f"{flag}={ABSOLUTE}"
    return ABSOLUTE if os.path.isabs(arg) else arg


def portable_path(path: Path | None) -> str | None:
    """A folder the user gave, as the manifest records it: as typed when relative, None when
    absolute (an absolute path names the machine, e.g. its home folder, not the run)."""
    return None if path is None or Path(path).is_absolute() else Path(path).as_posix()


def recorded_config(config: RunConfig) -> dict[str, Any]:
    """The run's :class:`~bench.run.config.RunConfig` as the manifest records it (read back by
    ``RunConfig.from_manifest``): ``data_root`` and ``out`` through :func:`portable_path` (a
    resume without ``--data-root`` reads a null data root as the default one)."""
    return {**asdict(config), "data_root": portable_path(config.data_root), "out": portable_path(config.out)}


def recorded_data(data: dict[str, Any], data_root: Path) -> dict[str, Any]:
    """The data's sizes and source as the manifest records them: a file under the data root that
    the source names (``zip: <data root>/cifar10-jpeg.zip``) is named relative to it
    (``zip: cifar10-jpeg.zip (under the data root)``)."""
    source, prefix = data.get("source"), f"{Path(data_root)}{os.sep}"
    if not source or prefix not in source:
        return data
    return {**data, "source": f"{source.replace(prefix, '')} (under the data root)"}


def generative_file_entry(path: Path) -> dict[str, str]:
    """The manifest's entries naming the cached generative model at ``path``: its path relative
    to the cache root, and that it is relative to the cache root."""
    return {"file": cache_relative(path), "under": "cache root"}


def start_manifest(plan, repeat_seeds: list[int], data_sizes: dict[str, Any]) -> dict[str, Any]:
    """The manifest written when a run starts (``status: running``)."""
    from bench.run.plan import strategy_settings
    from bench.run.results import MetricInfo
    from strategies import STRATEGIES
    from tasks import TASKS
    from tasks.base import optimizer_name

    return {
        "status": "running",
        "started": now(),
        "finished": None,
        "command": command_line(),
        "config": recorded_config(plan.config),
        "task": plan.task.name,
        "strategies": {cls.name: strategy_settings(cls, plan.config.strategy_options) for cls in plan.strategies},
        "generative": None if plan.generative is None else {**plan.generative.settings(), "seed": plan.config.seed},
        "protocol": {**asdict(plan.protocol), "optimizer": optimizer_name(plan.protocol.optimizer)},  # the recipe run
        "provided_by": {  # the module and installed distribution of the task and of each strategy
            "task": TASKS.origin(plan.task.name).as_dict(),
            "strategies": {cls.name: STRATEGIES.origin(cls.name).as_dict() for cls in plan.strategies},
        },
        "metric": asdict(MetricInfo.of(plan.task.metric)),  # what a value is, and its direction
        "repeat_seeds": repeat_seeds,
        "data": recorded_data(data_sizes, plan.config.data_root),
        "versions": package_versions(),
        "device": {
            **device_info(plan.device),
            "score_dtype": str(plan.score_dtype).removeprefix("torch."),
            "train_dtype": str(plan.train_dtype).removeprefix("torch."),
        },
        "host": socket.gethostname(),
        "git": git_commit(),
    }
