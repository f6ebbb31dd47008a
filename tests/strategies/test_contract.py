"""Every registered strategy meets the shipped contract (:mod:`bench.testing`) on its synthetic
task: k accepted samples, reproducible, F untouched, the whole pool, resumable, bad options
refused, honest requirements, a state that round-trips; also with options other than the defaults."""

from __future__ import annotations

import pytest

from bench.testing import STRATEGY_CHECKS
from strategies import list_strategies

#: Built-in strategies with options other than their defaults, as ``--option`` gives them.
WITH_OPTIONS = {
    "uncertainty": {"measure": "margin"},
    "snn": {"snn.alpha": 1.0, "manifold_quantile": 0.9},
    "si": {"start": "pool", "si.max_candidates": 5},
    "typiclust": {"space": "model", "neighbours": 5},
    "asal": {"space": "latent", "asal.steps": 3},
}


#: Strategies checked here on a smaller budget than their default (which their own slow test
#: checks): VAAL trains its VAE and discriminator for 300 iterations at its first selection.
SMALL_BUDGET = {"vaal": {"vaal.steps": 3, "vaal.first_steps": 10}}


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
@pytest.mark.parametrize("name", list_strategies())
def test_strategy_meets_the_contract(name, check):
    check(name, options=SMALL_BUDGET.get(name))


@pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
@pytest.mark.parametrize("name", WITH_OPTIONS)
def test_strategy_with_options_meets_the_contract(name, check):
    check(name, options=WITH_OPTIONS[name])
