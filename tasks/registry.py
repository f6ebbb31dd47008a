"""The registry of benchmark tasks (``TASKS``): built-in ones register here with
``@register_task("name")``, plug-ins too (also through the ``latent_bench.tasks`` entry points);
``from tasks import register_task`` is the same object."""

from bench.registry import Registry
from tasks.base import Task

TASKS: Registry[Task] = Registry("task", entry_point_group="latent_bench.tasks")
register_task = TASKS.register


def list_tasks() -> list[str]:
    """Names of all registered tasks, built-in and from installed plug-ins."""
    return TASKS.names()
