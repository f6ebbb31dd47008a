"""Registry of sampling strategies. Add one with ``@register_strategy("name")`` on a Strategy."""

from bench.registry import Registry
from strategies.base import Selection, SelectionContext, Strategy

STRATEGIES: Registry[Strategy] = Registry("strategy", entry_point_group="latent_bench.strategies")
register_strategy = STRATEGIES.register


def list_strategies() -> list[str]:
    """Names of all registered strategies, built-in and from installed plug-ins."""
    return STRATEGIES.names()


# registers the built-ins, the baseline first
from strategies import random  # noqa: E402,F401,I001
from strategies import coreset, si, snn, uncertainty  # noqa: E402,F401

__all__ = ["STRATEGIES", "register_strategy", "list_strategies", "Selection", "SelectionContext", "Strategy"]
