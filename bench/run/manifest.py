"""The run manifest: configuration, seeds, versions, device, git commit, start and end times."""

from __future__ import annotations

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


def command_line() -> str:
    """How this process was started, as a user would type it."""
    program = Path(sys.argv[0]).name
    program = "python -m bench" if program == "__main__.py" else program
    return " ".join([program, *sys.argv[1:]])


def start_manifest(plan, repeat_seeds: list[int], data_sizes: dict[str, int]) -> dict[str, Any]:
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
        "config": asdict(plan.config),
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
        "data": data_sizes,
        "versions": package_versions(),
        "device": {
            **device_info(plan.device),
            "score_dtype": str(plan.score_dtype).removeprefix("torch."),
            "train_dtype": str(plan.train_dtype).removeprefix("torch."),
        },
        "host": socket.gethostname(),
        "git": git_commit(),
    }
