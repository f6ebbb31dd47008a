"""Every registered strategy meets the shipped contract (:mod:`bench.testing`) on its synthetic
task: k accepted samples, reproducible, F untouched, the whole pool, resumable."""

from __future__ import annotations

import pytest

from bench.testing import STRATEGY_CHECKS
from strategies import list_strategies


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
@pytest.mark.parametrize("name", list_strategies())
def test_strategy_meets_the_contract(name, check):
    check(name)
