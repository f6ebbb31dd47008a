"""An example latent-bench plug-in: DeepAL's MNIST recipe as the task ``deepal-mnist``
(:mod:`deepal_task.task`) and BALD as the strategy ``bald`` (:mod:`deepal_task.bald`).

Installed, the harness finds both through the entry points in ``pyproject.toml``; each module
also registers its class when imported (``@register_task`` / ``@register_strategy``), so a script
may ``import deepal_task.task`` without installing the package. Nothing is imported here: the
harness loads each module through its own entry point.
"""

__version__ = "0.1.0"
