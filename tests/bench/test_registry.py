"""The registry: decorator registration, clear errors, and discovery through entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.registry import Registry, UnknownNameError
from strategies import STRATEGIES, list_strategies
from tasks import TASKS, list_tasks


def test_decorator_registers_under_the_given_name():
    registry = Registry("widget", entry_point_group="latent_bench.test_widgets")

    @registry.register("spanner")
    class Spanner:
        pass

    assert registry.names() == ["spanner"]
    assert registry.get("spanner") is Spanner
    assert isinstance(registry.create("spanner"), Spanner)


def test_a_name_cannot_be_registered_twice_by_different_factories():
    registry = Registry("widget", entry_point_group="latent_bench.test_widgets")
    registry.add("a", dict)
    registry.add("a", dict)  # the same factory again is harmless (re-imports)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", list)


@pytest.mark.parametrize("bad", ["", " x", "a,b"])
def test_invalid_names_are_refused(bad):
    with pytest.raises(ValueError, match="invalid widget name"):
        Registry("widget", "latent_bench.test_widgets").add(bad, dict)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(UnknownNameError) as info:
        STRATEGIES.get("nope")
    message = str(info.value)
    assert "unknown strategy 'nope'" in message
    assert "random" in message


def test_built_ins_are_registered():
    assert "mnist" in list_tasks()
    assert "random" in list_strategies()
    for name in list_strategies():
        cls = STRATEGIES.get(name)
        assert cls.name == name and cls.description
    for name in list_tasks():
        cls = TASKS.get(name)
        assert cls.name == name and cls.description


PLUGIN = '''
from strategies.base import Selection, Strategy

class FirstK(Strategy):
    name = "first-k"
    description = "the k lowest unlabeled indices (a plug-in from another package)"

    def select(self, context, k):
        return Selection(indices=context.unlabeled[:k])
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """A folder that looks like an installed package declaring a strategy entry point."""
    (tmp_path / "bench_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "bench_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[latent_bench.strategies]\nfirst-k = bench_plugin:FirstK\n")
    return tmp_path


def test_entry_points_of_installed_packages_are_discovered(plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_path))
    registry = Registry("strategy", entry_point_group="latent_bench.strategies")
    assert "first-k" in registry.names()
    assert registry.get("first-k").__name__ == "FirstK"


def test_plugin_strategy_shows_in_bench_list(plugin_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "list"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))},
    )
    assert result.returncode == 0, result.stderr
    assert "first-k" in result.stdout
    assert "a plug-in from another package" in result.stdout
    assert "random" in result.stdout
