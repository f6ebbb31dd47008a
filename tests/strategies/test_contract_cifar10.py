"""Every strategy that applies to CIFAR-10 meets the shipped contract there (VGG-16 and the
alpha-GAN on the checks' 400-image subset). Up to about 4 minutes a strategy on 2 cores, so these
tests are marked ``cifar10`` (and ``slow``) and left out of the default run (pyproject's ``addopts``); run them
with ``python -m pytest -m cifar10``. CI covers CIFAR-10 end to end through ``bench check``,
which runs every such strategy on a CIFAR-10 subset."""

from __future__ import annotations

import pytest

from bench.testing import check_strategy
from strategies import STRATEGIES, list_strategies
from tasks import TASKS

#: VAAL on a small training budget, as in test_contract.py.
OPTIONS = {"vaal": {"vaal.steps": 3, "vaal.first_steps": 10}}


@pytest.mark.slow
@pytest.mark.cifar10
@pytest.mark.parametrize(
    "name", [name for name in list_strategies() if STRATEGIES.get(name).refuses(TASKS.get("cifar10")()) is None]
)
def test_strategy_meets_the_contract_on_cifar10(name, cifar_root, shared_data):
    check_strategy(name, task="cifar10", options=OPTIONS.get(name))
