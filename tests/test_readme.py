"""README.md stays true: CI runs its set-up commands, and its plug-in examples work as written."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest

from bench.testing import STRATEGY_CHECKS, check_task, trained_context
from strategies import STRATEGIES
from tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def example(marker: str) -> str:
    (block,) = [block for block in code_blocks("python") if marker in block]
    return block


def run_as_module(source: str, module: str) -> dict:
    """Execute a README block as the module its first line names (as an in-tree file would be)."""
    namespace = types.ModuleType(module).__dict__
    exec(compile(source, f"README: {module}", "exec"), namespace)
    return namespace


def test_readme_opens_with_install_and_test_commands_that_ci_runs():
    install, test = code_blocks("bash")[0].strip().splitlines()
    assert "pip install" in install and "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci


@pytest.fixture
def readme_plugins():
    """The README's strategy and task registered as the in-tree modules it names, for one test."""
    with STRATEGIES.scoped(), TASKS.scoped():
        run_as_module(example("@register_strategy"), "strategies.smallest_margin")
        run_as_module(example("@register_task"), "tasks.digits")
        yield


def test_the_strategy_example_selects_and_meets_the_contract(readme_plugins):
    ctx = trained_context()
    picks = STRATEGIES.create("smallest-margin").select(ctx, 5).indices
    assert len(set(picks)) == 5 and not np.isin(picks, ctx.labeled).any()
    # the in-tree file imported once, then the README block run again: the same definition, no clash
    run_as_module(example("@register_strategy"), "strategies.smallest_margin")


def test_the_task_example_meets_the_contract_with_its_own_recipe(readme_plugins):
    check_task("digits")
    protocol = TASKS.get("digits").protocol
    assert (protocol.optimizer, protocol.start) == ("sgd", "fresh")


def test_the_contract_test_example_runs_as_written(readme_plugins):
    tests = run_as_module(example("from bench.testing import"), "test_contract")
    for check in STRATEGY_CHECKS.values():
        tests["test_smallest_margin"](check)
    tests["test_digits"]()
