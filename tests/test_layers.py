"""The house's rules: which wing may import which, and nothing imports in a circle.

Strategies, tasks and labelers (what plug-ins write) import no harness module but the registries
and the generative models' public specs; inside ``bench``, the run engine never imports reporting
or the commands, generative models never import the run engine, and reporting never runs anything.
Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "strategies", "tasks", "labelers")
#: What plug-in-facing modules may import of the harness: the registries behind register_strategy
#: and register_task, and the generative specs a task declares (and the model protocol strategies use).
PLUGIN_API = {"bench.registry", "bench.generative", "bench.generative.base"}
#: Wing -> the wings it must never import.
FORBIDDEN = {
    "bench.run": ("bench.report", "bench.cli", "bench.testing", "bench.study"),
    "bench.generative": ("bench.run", "bench.report", "bench.cli", "bench.testing"),
    "bench.report": ("bench.cli", "bench.testing", "bench.study"),
    "bench.study": ("bench.cli", "bench.testing"),  # a study plans runs and reads results; its driver is a command
    "bench.testing": ("bench.cli", "bench.report"),  # the checks drive the run engine only
    "bench.training": ("bench.run", "bench.report", "bench.generative", "bench.cli"),
    "bench.registry": ("bench.",),
    "bench.paths": ("bench.",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (at the top or inside a function), as the project's module
    names: ``from bench.run import plan`` imports ``bench.run.plan``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES}
    return {name for name in names if name in MODULES}


def in_wing(name: str, wing: str) -> bool:
    return name == wing or name.startswith(wing if wing.endswith(".") else wing + ".")


GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}  # a package importing its own modules


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] in ("strategies", "tasks", "labelers")))
def test_plugin_facing_modules_import_no_harness_module(name):
    harness = {m for m in GRAPH[name] if in_wing(m, "bench")}
    assert harness <= PLUGIN_API, f"{name} imports {sorted(harness - PLUGIN_API)}"


@pytest.mark.parametrize("wing", sorted(FORBIDDEN))
def test_each_wing_keeps_out_of_the_wings_above_it(wing):
    broken = {
        f"{name} -> {target}"
        for name in GRAPH
        if in_wing(name, wing)
        for target in GRAPH[name]
        for forbidden in FORBIDDEN[wing]
        if in_wing(target, forbidden) and not in_wing(target, wing)
    }
    assert not broken, f"{wing} must not import {', '.join(FORBIDDEN[wing])}: {sorted(broken)}"


def test_plugin_api_modules_of_generative_import_nothing_of_tasks_or_strategies():
    # tasks and strategies import these; an import back would be a circle through the package
    for name in PLUGIN_API:
        assert not {m for m in GRAPH[name] if m.split(".")[0] in ("tasks", "strategies")}, name


def test_nothing_imports_in_a_circle():
    """No module reaches itself through imports (a package's ``__init__`` counts as a module)."""
    cycles, state = [], {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles:\n" + "\n".join(cycles)
