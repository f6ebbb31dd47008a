"""The example plug-in in ``examples/deepal_task`` works through real entry points.

Nothing is installed: a temporary folder holds the metadata of an installed distribution of the
example (its name, version, dependencies and entry points read from its own ``pyproject.toml``)
and goes on ``PYTHONPATH`` with the example's source, which is what ``pip install -e`` amounts
to. Each check runs in a subprocess, so that the harness discovers the plug-in from scratch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "deepal_task"
PROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a Python that has the example plug-in installed (editable)."""
    site = tmp_path_factory.mktemp("site")
    dist = site / f"{PROJECT['name'].replace('-', '_')}-{PROJECT['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PROJECT['name']}\nVersion: {PROJECT['version']}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in PROJECT["dependencies"])
    )
    (dist / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items()) + "\n"
            for group, entries in PROJECT["entry-points"].items()
        )
    )
    (dist / "top_level.txt").write_text("deepal_task\n")
    path = os.pathsep.join(filter(None, [str(site), str(EXAMPLE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "BENCH_CACHE": str(tmp_path_factory.mktemp("cache"))}


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_the_example_declares_both_entry_points():
    assert PROJECT["entry-points"] == {
        "latent_bench.tasks": {"deepal-mnist": "deepal_task.task:DeepALMNISTTask"},
        "latent_bench.strategies": {"bald": "deepal_task.bald:BALD"},
    }
    assert "latent-bench" in PROJECT["dependencies"]


def test_bench_list_shows_the_plugin_and_where_bald_applies(plugin_env):
    result = run(["-m", "bench", "list"], plugin_env)
    assert result.returncode == 0, result.stderr
    assert "left out" not in result.stderr and "failed to import" not in result.stdout
    lines = result.stdout.splitlines()
    assert any(line.split()[:1] == ["deepal-mnist"] for line in lines)
    assert any(line.split()[:1] == ["bald"] and "MC dropout" in line for line in lines)
    start = next(i for i, line in enumerate(lines) if line.startswith("which strategy applies")) + 1
    matrix = lines[start : lines.index("", start)]  # up to the blank line before the refused pairs
    columns = matrix[0].split()
    applies = {row.split()[0]: dict(zip(columns, row.split()[1:])) for row in matrix[1:]}
    assert applies["bald"]["deepal-mnist"] == "x" and applies["bald"]["mnist"] == "-"
    assert applies["random"]["deepal-mnist"] == "x" and applies["snn"]["deepal-mnist"] == "x"
    assert any(line.strip().startswith("bald on mnist: it needs") for line in lines)  # why it is refused


def test_a_run_of_the_plugin_records_who_provided_it_and_the_recipe(plugin_env, mnist_root, tmp_path):
    out = tmp_path / "run"
    result = run(
        [
            "-m",
            "bench",
            "run",
            "--task",
            "deepal-mnist",
            "--strategy",
            "random,bald",
            "--subset",
            "600",
            "--initial",
            "50",
            "--increment",
            "50",
            "--rounds",
            "2",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--quiet",
            "--no-download",
            "--data-root",
            str(mnist_root),
            "--out",
            str(out),
        ],
        plugin_env,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    plugin = {"distribution": PROJECT["name"], "version": PROJECT["version"]}
    provided = manifest["provided_by"]
    assert {k: provided["task"][k] for k in plugin} == plugin and provided["task"]["module"] == "deepal_task.task"
    assert {k: provided["strategies"]["bald"][k] for k in plugin} == plugin
    assert provided["strategies"]["random"]["distribution"] == "latent-bench"
    protocol = manifest["protocol"]
    assert (protocol["optimizer"], protocol["optimizer_options"], protocol["start"]) == (
        "sgd",
        {"momentum": 0.5},
        "fresh",
    )
    assert (protocol["lr"], protocol["batch_size"], protocol["initial"], protocol["rounds"]) == (0.01, 64, 50, 2)
    rows = (out / "rounds.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[1] + row.split(",")[4] for row in rows) == ["bald1", "bald2", "random1", "random2"]


@pytest.mark.slow
def test_the_examples_own_contract_tests_pass(plugin_env, mnist_root):
    env = {**plugin_env, "BENCH_DATA": str(mnist_root)}
    result = run(["-m", "pytest", "-q", str(EXAMPLE / "tests"), "-p", "no:cacheprovider"], env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
