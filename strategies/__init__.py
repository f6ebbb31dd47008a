"""Sampling strategies and their registry. Add one with ``@register_strategy("name")`` on a Strategy."""

# isort: off
# registers the built-ins in the order `list` and `--strategy all` use: the baseline, the paper's
# two, then the others by year of their paper
from strategies import random, snn, si  # noqa: F401
from strategies import uncertainty, coreset, vaal, badge, asal, typiclust, lcmd  # noqa: F401

# isort: on
from strategies.base import Selection, SelectionContext, Strategy
from strategies.registry import STRATEGIES, list_strategies, register_strategy

__all__ = ["STRATEGIES", "register_strategy", "list_strategies", "Selection", "SelectionContext", "Strategy"]
