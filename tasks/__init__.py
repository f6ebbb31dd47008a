"""Benchmark tasks and their registry. Add one with ``@register_task("name")`` on a Task subclass."""

from tasks import cifar10, ivus, mnist  # noqa: E402,F401,I001  (registers the built-in tasks)
from tasks.base import (
    AlphaGANSpec,
    Capability,
    DataNotFoundError,
    GenerativeSpec,
    Labels,
    Metric,
    Protocol,
    Task,
    TaskData,
    VAESpec,
)
from tasks.registry import TASKS, list_tasks, register_task

__all__ = [
    "TASKS",
    "register_task",
    "list_tasks",
    "AlphaGANSpec",
    "Capability",
    "DataNotFoundError",
    "GenerativeSpec",
    "Labels",
    "Metric",
    "Protocol",
    "Task",
    "TaskData",
    "VAESpec",
]
