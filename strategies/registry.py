"""The registry of sampling strategies (``STRATEGIES``): built-in ones register here with
``@register_strategy("name")``, plug-ins too (also through the ``latent_bench.strategies`` entry
points); ``from strategies import register_strategy`` is the same object."""

from bench.registry import Registry
from strategies.base import Strategy

STRATEGIES: Registry[Strategy] = Registry("strategy", entry_point_group="latent_bench.strategies")
register_strategy = STRATEGIES.register


def list_strategies() -> list[str]:
    """Names of all registered strategies, built-in and from installed plug-ins."""
    return STRATEGIES.names()
