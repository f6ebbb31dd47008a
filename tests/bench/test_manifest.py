"""A manifest names no folder of the machine that wrote it: a run's, and every committed one."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cli.runner import execute
from bench.paths import cache_root, default_data_root
from bench.run.config import RunConfig
from bench.run.manifest import ABSOLUTE, portable_argument
from bench.testing import Blobs, registered
from tasks.base import TaskData

ROOT = Path(__file__).resolve().parents[2]
#: An absolute path at the start of a text or after a space, quote, ``=``, ``:`` or ``(``: ``/x``
#: (not ``//``, as in a URL, nor a slash between spaces, as in "stress / 300 kPa") or ``C:\x``.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s=:'\"(])(?:/[^\s/]|[A-Za-z]:[\\/])")


def strings(value) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def machine_folders(manifest: dict, *folders: Path) -> list[str]:
    """The strings of ``manifest`` that hold an absolute path or name one of ``folders``."""
    names = [str(f) for f in folders if len(Path(f).parts) > 1]  # never "/" itself
    return [s for s in strings(manifest) if ABSOLUTE_PATH.search(s) or any(n in s for n in names)]


class SourcedBlobs(Blobs):
    """Blobs that say they were read from a file under the data root (as CIFAR-10's copies do)."""

    name = "blobs-sourced"

    def load(self, data_root: Path | None = None, download: bool = True) -> TaskData:
        return dataclasses.replace(super().load(data_root, download), source=f"file: {Path(data_root) / 'blobs.npz'}")


def test_a_run_s_manifest_names_no_folder_of_the_machine(tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "run"
    argv = ["bench", "run", "--task", "blobs-sourced", "--data-root", str(data), f"--out={out}"]
    monkeypatch.setattr(sys, "argv", argv)
    config = RunConfig(
        task="blobs-sourced",
        strategies=["random", "snn"],
        rounds=1,
        threads=1,
        quiet=True,
        data_root=data,
        out=out,
        generative_options={"epochs": 2},
    )
    with registered(SourcedBlobs):
        execute(config)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    folders = (tmp_path, Path(tempfile.gettempdir()), Path.home(), cache_root(), ROOT)
    assert machine_folders(manifest, *folders) == []
    generative = manifest["generative"]
    assert generative["under"] == "cache root" and (cache_root() / generative["file"]).is_file()
    assert generative["file"].startswith("generative/vae-blobs-sourced-")
    assert manifest["data"]["source"] == "file: blobs.npz (under the data root)"
    assert manifest["command"].endswith(f"--data-root {ABSOLUTE} --out={ABSOLUTE}")
    assert manifest["config"]["data_root"] is None and manifest["config"]["out"] is None
    assert RunConfig.from_manifest(manifest["config"]).data_root == default_data_root()  # as a resume reads it


def test_relative_folders_are_recorded_as_typed(monkeypatch):
    assert portable_argument("results/runs/a") == "results/runs/a" and portable_argument("--out=runs") == "--out=runs"
    assert portable_argument("--seed") == "--seed" and portable_argument("/x/y") == ABSOLUTE
    saved = RunConfig.from_manifest({"task": "t", "strategies": ["random"], "data_root": "../data", "out": "runs/a"})
    assert saved.data_root == Path("../data") and saved.out == Path("runs/a")


def test_an_old_manifest_with_absolute_folders_is_still_read():
    saved = RunConfig.from_manifest({"task": "t", "strategies": ["random"], "data_root": "/data", "out": "/runs/a"})
    assert saved.data_root == Path("/data") and saved.out == Path("/runs/a")


COMMITTED = sorted((ROOT / "results").rglob("*manifest.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(ROOT)) for p in COMMITTED])
def test_committed_manifests_name_no_folder_of_a_machine(path):
    assert machine_folders(json.loads(path.read_text()), ROOT) == []


def test_committed_manifests_are_found():
    assert len(COMMITTED) >= 5
