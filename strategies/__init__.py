"""Sampling strategies and their registry. Add one with ``@register_strategy("name")`` on a Strategy."""

from strategies.base import Selection, SelectionContext, Strategy
from strategies.registry import STRATEGIES, list_strategies, register_strategy

# registers the built-ins, the baseline first
from strategies import random  # noqa: E402,F401,I001
from strategies import coreset, si, snn, uncertainty  # noqa: E402,F401

__all__ = ["STRATEGIES", "register_strategy", "list_strategies", "Selection", "SelectionContext", "Strategy"]
