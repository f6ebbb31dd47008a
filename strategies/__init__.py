"""Sampling strategies and their registry. Add one with ``@register_strategy("name")`` on a Strategy."""

# registers the built-ins, the baseline first
from strategies import (  # noqa: E402,F401
    coreset,
    random,  # noqa: E402,F401,I001
    si,
    snn,
    uncertainty,
)
from strategies.base import Selection, SelectionContext, Strategy
from strategies.registry import STRATEGIES, list_strategies, register_strategy

__all__ = ["STRATEGIES", "register_strategy", "list_strategies", "Selection", "SelectionContext", "Strategy"]
