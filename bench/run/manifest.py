"""The run manifest: configuration, seeds, versions, device, git commit, start and end times.

A manifest names no folder of the machine that wrote it, so a committed reference says nothing
about that machine: the cached generative model is named relative to the cache root
(``"file": "generative/vae-mnist-<key>.pt", "under": "cache root"``), the data's source relative
to the data root, ``--data-root`` and ``--out`` as typed when relative and null when absolute, and
the command with each absolute path replaced by ``<absolute path>``.

A manifest keeps a checksum of each setting of its plan (``plan_checksums``), so that a resume
refuses a manifest whose plan was edited (rows of two seeds or two tasks would end up in one
``rounds.csv``, averaged as one), and :func:`manifest_problem` names a field a resume needs that
is missing or of the wrong type.
"""

from __future__ import annotations

import hashlib
import json
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
from bench.run.tracking_records import recorded_uri

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
    :data:`ABSOLUTE`, and a URI (``--track-uri``'s) as :func:`~bench.run.tracking_records.recorded_uri`
    keeps it: without user, password or query, :data:`ABSOLUTE` for a local store's absolute path."""
    flag, sep, value = arg.partition("=")
    if arg.startswith("--") and sep:
        return f"{flag}={portable_argument(value)}"
    if "://" in arg:
        return recorded_uri(arg) or ABSOLUTE
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


#: Settings of a manifest's ``config`` that say where a run finds its data and writes, and how
#: much it prints, not what it computes: a resume may change them, and the plan's checksums
#: leave them out.
NOT_PLANNED = frozenset({"data_root", "download", "quiet", "out"})


def plan_checksums(config: dict[str, Any]) -> dict[str, str]:
    """A checksum of each setting of a manifest's ``config`` that decides what the run computes
    (all but :data:`NOT_PLANNED`), of its JSON text: a resume compares them to name a setting
    that was edited."""
    return {name: _digest(value) for name, value in sorted(config.items()) if name not in NOT_PLANNED}


def plan_checksum(config: dict[str, Any]) -> str:
    """One checksum of the whole plan of a manifest's ``config`` (what a checkpoint is bound to)."""
    return _digest(plan_checksums(config))


def plan_changes(manifest: dict[str, Any]) -> list[str]:
    """The settings of ``manifest``'s config whose checksum differs from the one recorded when the
    run started (added or removed ones too); none for a manifest without checksums (a run
    started before they were recorded)."""
    recorded = manifest.get("plan_checksums")
    if recorded is None:
        return []
    now = plan_checksums(manifest["config"])
    return sorted(name for name in recorded.keys() | now.keys() if recorded.get(name) != now.get(name))


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: A run's ``status`` and a unit's, as :class:`bench.run.folder.RunFolder` writes them.
RUN_STATUSES = ("running", "interrupted", "failed", "complete", "complete with failures")
UNIT_STATUSES = ("pending", "running", "interrupted", "complete", "failed")


def manifest_problem(manifest: Any) -> str | None:
    """What keeps ``manifest`` (a run folder's ``manifest.json``, read) from being resumed: a
    field the resume reads that is missing or of the wrong type, named as a path
    (``units.random-r0.status``); None when it has every one."""
    if not isinstance(manifest, dict):
        return "it is not a JSON object"
    if "status" not in manifest:
        return "it has no status"
    if manifest["status"] not in RUN_STATUSES:
        return f"status is {manifest['status']!r}, not one a run writes ({', '.join(RUN_STATUSES)})"
    for name in ("config", "units"):
        if name not in manifest:
            return f"it has no {name}"
        if not isinstance(manifest[name], dict) or not manifest[name]:
            return f"{name} is {manifest[name]!r}, not a run's"
    if not isinstance(manifest.get("plan_checksums", {}), dict):
        return "plan_checksums is not a run's"
    for key, unit in manifest["units"].items():
        if not isinstance(unit, dict):
            return f"units.{key} is {unit!r}, not a unit's entry"
        for field, kind in (("strategy", str), ("repeat", int), ("status", str), ("rounds_done", int)):
            if field not in unit:
                return f"units.{key} has no {field}"
            if not isinstance(unit[field], kind) or isinstance(unit[field], bool):
                return f"units.{key}.{field} is {unit[field]!r}, not a {kind.__name__}"
        if unit["status"] not in UNIT_STATUSES:
            return f"units.{key}.status is {unit['status']!r}, not one a run writes ({', '.join(UNIT_STATUSES)})"
    return None


def start_manifest(
    plan, repeat_seeds: list[int], data_sizes: dict[str, Any], recipe: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest written when a run starts (``status: running``). ``recipe``: the record of a
    recipe file the run's config applied (``run --recipe``: its file name, SHA-256 and settings),
    kept as ``recipe``; the settings are in ``config`` already, so a resume needs nothing of it."""
    from bench.run.plan import strategy_settings
    from bench.run.results import MetricInfo
    from strategies import STRATEGIES
    from tasks import TASKS
    from tasks.base import optimizer_name

    config = recorded_config(plan.config)
    manifest: dict[str, Any] = {
        "status": "running",
        "started": now(),
        "finished": None,
        "command": command_line(),
        "config": config,
        "plan_checksums": plan_checksums(json.loads(json.dumps(config, default=str))),  # as a resume reads it
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
    if recipe is not None:
        manifest["recipe"] = recipe
    return manifest
