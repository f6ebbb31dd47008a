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


def widget(name: str) -> type:
    return type("Widget", (), {"name": name, "__module__": f"widgets.{name.replace('-', '_')}"})


def test_the_bare_decorator_registers_a_class_under_its_own_name():
    registry = Registry("widget", entry_point_group="latent_bench.test_widgets")

    @registry.register
    class Spanner:
        name = "spanner"

    assert registry.names() == ["spanner"]
    assert registry.get("spanner") is Spanner
    assert isinstance(registry.create("spanner"), Spanner)


def test_a_name_given_to_the_decorator_must_be_the_class_name():
    registry = Registry("widget", entry_point_group="latent_bench.test_widgets")
    registry.register("spanner")(widget("spanner"))
    with pytest.raises(ValueError, match="named 'wrench' .* registered as 'spanner'"):
        registry.register("spanner")(widget("wrench"))
    with pytest.raises(ValueError, match="has no `name`"):
        registry.register(type("Nameless", (), {}))


def test_a_name_cannot_be_registered_twice_by_different_classes():
    registry = Registry("widget", entry_point_group="latent_bench.test_widgets")
    first = widget("a")
    registry.add("a", first)
    registry.add("a", first)  # the same class again is harmless (re-imports)
    again = widget("a")  # the same definition run again (a reloaded module, a notebook cell) replaces it
    registry.add("a", again)
    assert registry.get("a") is again
    other = type("Other", (), {"name": "a", "__module__": "elsewhere"})
    with pytest.raises(ValueError, match="already registered by widgets.a.Widget"):
        registry.add("a", other)


@pytest.mark.parametrize("bad", ["", " x", "a,b"])
def test_invalid_names_are_refused(bad):
    with pytest.raises(ValueError, match="invalid widget name"):
        Registry("widget", "latent_bench.test_widgets").add(bad, widget(bad))


def test_scoped_registrations_are_undone():
    registry = Registry("widget", entry_point_group="latent_bench.test_widgets")
    with registry.scoped():
        registry.add("a", widget("a"))
        assert "a" in registry
    assert "a" not in registry


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


PLUGIN = """
from strategies.base import Selection, Strategy

class FirstK(Strategy):
    name = "first-k"
    description = "the k lowest unlabeled indices (a plug-in from another package)"

    def select(self, context, k):
        return Selection(indices=context.unlabeled[:k])
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """A folder that looks like an installed package declaring a strategy entry point."""
    return fake_distribution(tmp_path, "bench_plugin", PLUGIN, "first-k = bench_plugin:FirstK")


def fake_distribution(
    folder: Path,
    module: str,
    source: str,
    entry_point: str,
    group: str = "latent_bench.strategies",
    requires: str = "numpy>=1.0",
) -> Path:
    """``folder`` holding ``module``.py and the metadata of an installed distribution of it."""
    (folder / f"{module}.py").write_text(source)
    dist = folder / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\nRequires-Dist: {requires}\n"
    )
    (dist / "entry_points.txt").write_text(f"[{group}]\n{entry_point}\n")
    (dist / "top_level.txt").write_text(f"{module}\n")
    return folder


def test_entry_points_of_installed_packages_are_discovered(plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_path))
    registry = Registry("strategy", entry_point_group="latent_bench.strategies")
    assert "first-k" in registry.names()
    assert registry.get("first-k").__name__ == "FirstK"
    origin = registry.origin("first-k")
    assert (origin.module, origin.distribution, origin.version, origin.requires) == (
        "bench_plugin",
        "bench-plugin",
        "0.1",
        ["numpy>=1.0"],
    )


def test_an_entry_point_named_unlike_its_class_is_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(
        str(fake_distribution(tmp_path, "lowest_plugin", PLUGIN, "lowest = lowest_plugin:FirstK"))
    )
    registry = Registry("strategy", entry_point_group="latent_bench.strategies")
    assert "lowest" not in registry.names() and "first-k" not in registry.names()
    assert "named 'first-k' (its `name`) but its entry point 'lowest'" in caplog.text
    assert "failed to import" not in caplog.text  # it imported; its names disagree
    with pytest.raises(UnknownNameError, match="plug-in 'lowest' was left out from lowest-plugin 0.1"):
        registry.get("lowest")


DECORATED = PLUGIN.replace("class FirstK", "@register_strategy\nclass FirstK").replace(
    "from strategies.base", "from strategies import register_strategy\nfrom strategies.base"
)


def test_an_entry_point_named_unlike_its_decorated_class_runs_under_neither_name(tmp_path):
    """The class's own decorator registers it when the entry point imports it; it is still left
    out, under both names, with one message saying why and how to fix it."""
    folder = fake_distribution(tmp_path, "decorated_plugin", DECORATED, "lowest = decorated_plugin:FirstK")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
    listed = subprocess.run(
        [sys.executable, "-m", "bench", "list"], capture_output=True, text=True, timeout=120, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.count("left out the strategy plug-in 'lowest'") == 1
    assert "failed to import" not in listed.stderr + listed.stdout
    assert "name the entry point 'first-k'" in listed.stderr
    assert "first-k" not in listed.stdout.split("which strategy applies")[1].split("plug-ins left out")[0]
    names = subprocess.run(
        [sys.executable, "-c", "from strategies import STRATEGIES; print(','.join(STRATEGIES.names()))"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert names.returncode == 0, names.stderr
    assert "random" in names.stdout.split(",") and not {"lowest", "first-k"} & set(names.stdout.strip().split(","))
    for name in ("lowest", "first-k"):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                "--task",
                "mnist",
                "--strategy",
                name,
                "--out",
                str(tmp_path / name),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert run.returncode == 2, run.stderr
        assert "plug-in 'lowest' was left out" in run.stderr and "name the entry point 'first-k'" in run.stderr


def test_a_plugin_that_fails_to_import_is_left_out_with_one_warning(tmp_path):
    folder = fake_distribution(
        tmp_path, "broken_plugin", "import not_a_module_anywhere\n", "broken = broken_plugin:Broken"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "list"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "random" in result.stdout and "mnist" in result.stdout
    assert result.stderr.count("left out the strategy plug-in 'broken' from broken-plugin 0.1") == 1
    assert "No module named 'not_a_module_anywhere'" in result.stderr
    assert "failed to import" in result.stdout and "broken" in result.stdout
    run = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--task", "mnist", "--strategy", "broken"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 2 and "plug-in 'broken' was left out" in run.stderr and "failed to import" in run.stderr


def test_plugin_strategy_shows_in_bench_list(plugin_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")])),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "first-k" in result.stdout
    assert "a plug-in from another package" in result.stdout
    assert "random" in result.stdout
