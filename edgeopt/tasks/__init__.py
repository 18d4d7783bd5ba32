"""The task registry, and the one answer to "which task is this model?" (``task_of``).

Every module in this package that defines ``TASK`` is a task; one defined elsewhere joins
with ``register_task`` (from its own module, so importing that module — ``--plugin MODULE``
— registers it) or through the ``edgeopt.tasks`` entry-point group of an installed package.

Example:
    >>> get_task("classification").main.title
    'top-1'
    >>> task_of({"task": "detection", "head": {"convention": "yolov8", "num_classes": 2}}).head.convention
    'yolov8'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import add, add_installed, discover
from edgeopt.tasks.base import Metric, RawOutputs, Task, UnknownTask, per_class_table

__all__ = ["Metric", "RawOutputs", "Task", "all_tasks", "get_task", "per_class_table", "register_task", "task_of"]
HELPERS = ("base", "drawing", "augment")  # modules of this package that are not tasks


@lru_cache(maxsize=1)
def _registry() -> dict[str, Task]:
    found = {"unknown": UnknownTask(), **discover(__name__, __path__, "TASK", Task, skip=HELPERS)}
    return add_installed(found, "edgeopt.tasks", Task)


def register_task(task: Task) -> Task:
    """Add a task defined outside edgeopt; its name must not shadow a built-in one."""
    return add(_registry(), task, Task, "task")


def all_tasks() -> list[Task]:
    return list(_registry().values())


def get_task(name: str | None) -> Task:
    """The task called ``name`` (None or "unknown": the task that scores nothing)."""
    registry = _registry()
    if (name or "unknown") not in registry:
        raise ConfigError(f"unknown task {name!r}; edgeopt knows {', '.join(registry)}. A task from a plugin "
                          "registers when its module is imported: pass --plugin MODULE (or install it as an "
                          "edgeopt.tasks entry point)")
    return registry[name or "unknown"]


def task_of(model: Any, default: str = "unknown") -> Task:
    """The task of a model, an artifact or an artifact's manifest, bound to its outputs' description (a
    detector's head). ``default``: the task assumed where none is recorded (``evaluate`` scores such a
    model on labelled images, so as a classifier)."""
    manifest = getattr(model, "manifest", model)
    if isinstance(manifest, dict):
        name, head = manifest.get("task"), manifest.get("head")
    else:
        name, head = model.task, getattr(model, "head", None)
    if not (name is None or isinstance(name, str)) or not (head is None or isinstance(head, dict)):
        raise ConfigError(f"this model's manifest is malformed: its task must be a name and its head a table, "
                          f"got task {type(name).__name__}, head {type(head).__name__}; re-export the model "
                          "(edgeopt export) or check where it came from")
    return get_task(name if name not in (None, "unknown") else default).bind(head)
