"""The task registry: every module in this package that defines ``TASK`` is a task.

Example:
    >>> get_task("classification").main.title
    'top-1'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.registry import discover
from edgeopt.tasks.base import Metric, Task, UnknownTask

__all__ = ["Metric", "Task", "all_tasks", "get_task", "task_of"]


@lru_cache(maxsize=1)
def _registry() -> dict[str, Task]:
    return {"unknown": UnknownTask(), **discover(__name__, __path__, "TASK", Task, skip=("base",))}


def all_tasks() -> list[Task]:
    return list(_registry().values())


def get_task(name: str | None) -> Task:
    """The task called ``name`` (None or "unknown": the task that scores nothing)."""
    registry = _registry()
    if (name or "unknown") not in registry:
        raise ConfigError(f"unknown task {name!r}; edgeopt knows {', '.join(registry)}")
    return registry[name or "unknown"]


def task_of(model: Any) -> Task:
    """The task of a model or an artifact, bound to its outputs' description (a detector's head)."""
    manifest = getattr(model, "manifest", None)
    if manifest is not None:  # an Artifact
        return get_task(manifest.get("task")).bind(manifest.get("head"))
    return get_task(model.task).bind(getattr(model, "head", None))
