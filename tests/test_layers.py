"""Strategies, tasks and labelers import no harness module: what the harness owns reaches them
through their context or arguments, so a plug-in needs only the registration and base classes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"bench.registry"}  # the registries behind register_strategy / register_task


def harness_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {name for name in names if name == "bench" or name.startswith("bench.")} - ALLOWED


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for package in ("strategies", "tasks", "labelers")
                                        for p in (ROOT / package).rglob("*.py")))
def test_plugin_facing_modules_import_no_harness_module(path):
    assert harness_imports(ROOT / path) == set()
