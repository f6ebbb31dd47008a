"""Registry of benchmark tasks. Add one with ``@register_task("name")`` on a Task subclass."""

from bench.registry import Registry
from tasks.base import AlphaGANSpec, Capability, DataNotFoundError, GenerativeSpec, Labels, Metric, Protocol, Task, TaskData

TASKS: Registry[Task] = Registry("task", entry_point_group="latent_bench.tasks")
register_task = TASKS.register


def list_tasks() -> list[str]:
    """Names of all registered tasks, built-in and from installed plug-ins."""
    return TASKS.names()


from tasks import cifar10, ivus, mnist  # noqa: E402,F401  (registers the built-in tasks)

__all__ = [
    "TASKS", "register_task", "list_tasks",
    "AlphaGANSpec", "Capability", "DataNotFoundError", "GenerativeSpec", "Labels", "Metric", "Protocol", "Task", "TaskData",
]
