"""README.md stays true: CI runs its set-up commands, and its strategy example works."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from strategies import STRATEGIES
from tests.strategies.test_contract import make_context
from bench.testing import Blobs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_install_and_test_commands_that_ci_runs():
    install, test = code_blocks("bash")[0].strip().splitlines()
    assert "pip install" in install and "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci


def test_the_add_your_own_strategy_example_registers_a_working_strategy():
    (example,) = [block for block in code_blocks("python") if "@register_strategy" in block]
    namespace: dict = {}
    exec(compile(example, "README example", "exec"), namespace)
    try:
        ctx = make_context(Blobs())
        picks = STRATEGIES.create("smallest-margin").select(ctx, 5).indices
        assert len(set(picks)) == 5 and not np.isin(picks, ctx.labeled).any()
    finally:
        STRATEGIES.remove("smallest-margin")
