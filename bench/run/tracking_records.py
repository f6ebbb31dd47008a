"""What a run is, as an experiment tracker records it: the parent run's parameters (the run's
settings), a round's metrics (the numeric columns of its ``rounds.csv`` row), the git tags, and
the store's address as a manifest may keep it (naming no folder of the machine, holding no
secret). Pure functions of the manifest and the rows; :mod:`bench.run.tracking` sends them."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: Columns of ``rounds.csv`` that say which round a row is (parameters, tags and the step), not what it measured.
IDENTITY = frozenset({"task", "strategy", "repeat", "seed", "round", "n_labeled", "metric"})
#: Columns the run folder writes rounded to 4 decimals: the tracker logs what ``rounds.csv`` holds.
ROUNDED = frozenset({"train_s", "select_s", "label_s", "eval_s", "diagnose_s"})


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a file store on this machine (a path, or a ``file:`` URI)."""
    scheme = urlsplit(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # C:\... on Windows


def recorded_uri(uri: str) -> str | None:
    """``uri`` as the manifest records it, naming no folder of the machine and holding no
    secret: a relative path as typed, None for an absolute path (a local file or SQLite store),
    a server's address without user, password, query or fragment."""
    parts = urlsplit(uri)
    if is_local(uri):
        path = parts.path if parts.scheme == "file" else uri
        return None if os.path.isabs(path) or parts.netloc else uri
    if parts.scheme == "sqlite":
        return None if parts.path.startswith("//") else uri  # sqlite:////abs/x.db is absolute, sqlite:///x.db not
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def shown(uri: str) -> str:
    """``uri`` for a message: a server's address without its user and password."""
    if is_local(uri) or urlsplit(uri).scheme == "sqlite":
        return uri
    return recorded_uri(uri) or uri


def redacted(text: str, uri: str) -> str:
    """``text`` (an error's) without the user and password of ``uri``, which MLflow's errors quote."""
    netloc = urlsplit(uri).netloc
    return text.replace(f"{netloc.rpartition('@')[0]}@", "") if "@" in netloc else text


def metric_key(name: str) -> str:
    """A column's name as an MLflow metric key (characters MLflow refuses become ``_``)."""
    return re.sub(r"[^\w\-. /]", "_", name)


def round_metrics(row: dict[str, Any], columns: list[str]) -> dict[str, float]:
    """The metrics of one row of ``rounds.csv`` (a written row, or a record's): its numeric
    columns but those that name the round, each finite value as ``rounds.csv`` holds it; a value
    that is empty, NaN or infinite (round 1's diagnostics, a column the run does not fill) is no
    measurement and is left out. ``value`` comes last: a round whose ``value`` is logged has
    every metric logged."""
    metrics = {}
    for column in columns:
        value = row.get(column)
        if column in IDENTITY or isinstance(value, (str, bytes)) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            metrics[metric_key(column)] = round(number, 4) if column in ROUNDED else number
    if "value" in metrics:
        metrics["value"] = metrics.pop("value")
    return metrics


def flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    """``value`` (a manifest entry) as parameters: nested dicts as dotted keys, lists as JSON,
    None left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(f"{prefix}.{key}" if prefix else str(key), item)
    elif value is not None:
        yield prefix, value if isinstance(value, str) else json.dumps(value, default=str)


def run_params(manifest: dict[str, Any]) -> dict[str, str]:
    """The parent run's parameters: the resolved configuration and protocol, every strategy's
    options, the seeds, the data's sizes, the metric, the generative model's settings, the device
    and precisions, and the package versions."""
    generative = {k: v for k, v in (manifest.get("generative") or {}).items() if k not in ("quality", "under")}
    sections = {
        "config": manifest.get("config"),
        "protocol": manifest.get("protocol"),
        "strategy": manifest.get("strategies"),
        "repeat_seeds": manifest.get("repeat_seeds"),
        "data": manifest.get("data"),
        "metric": manifest.get("metric"),
        "generative": generative or None,
        "device": manifest.get("device"),
        "version": manifest.get("versions"),
        "recipe": (manifest.get("recipe") or {}).get("file"),
    }
    return {metric_key(k): v for k, v in flatten("", sections)}


def commit_tags(manifest: dict[str, Any]) -> dict[str, str]:
    git = manifest.get("git") or {}
    if not git.get("commit"):
        return {}
    return {"git_commit": git["commit"], "git_dirty": str(git.get("dirty")), "mlflow.source.git.commit": git["commit"]}
