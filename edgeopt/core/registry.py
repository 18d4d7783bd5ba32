"""Registries by convention: every module of a package that defines ``BACKEND``, ``PASS`` or
``TASK`` is an entry, found without a list kept by hand; one defined elsewhere (a plugin)
joins through ``add``. Backends, passes and tasks each keep their own registry this way.

Example:
    >>> from edgeopt.tasks import Task
    >>> sorted(discover("edgeopt.tasks", __import__("edgeopt.tasks").tasks.__path__, "TASK", Task))
    ['classification', 'detection']
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable, TypeVar

from edgeopt.core.errors import ConfigError

T = TypeVar("T")


def discover(package: str, path: Iterable[str], attribute: str, kind: type[T], skip: Iterable[str] = ()) -> dict[str, T]:
    """``{entry.name: entry}`` for every module of ``package`` (but ``skip`` and private ones) defining ``attribute``."""
    found: dict[str, T] = {}
    for info in pkgutil.iter_modules(path):
        if info.name in skip or info.name.startswith("_"):
            continue
        entry = getattr(importlib.import_module(f"{package}.{info.name}"), attribute, None)
        if isinstance(entry, kind):
            found[entry.name] = entry
    return found


def add_installed(found: dict[str, T], group: str, kind: type[T]) -> dict[str, T]:
    """``found`` plus the entries of installed packages' ``group`` entry points (those of ``kind`` whose
    name is not taken: a plugin does not shadow a built-in)."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=group):
        entry = entry_point.load()
        if isinstance(entry, kind) and entry.name not in found:
            found[entry.name] = entry
    return found


def add(registry: dict[str, T], entry: T, kind: type[T], what: str) -> T:
    """Register ``entry`` (an instance of ``kind``); its name must not shadow a different one."""
    if not isinstance(entry, kind):
        raise ConfigError(f"register_{what} takes a {kind.__name__} instance, not {type(entry).__name__}")
    known = registry.get(entry.name)
    if known is not None and type(known) is not type(entry):
        raise ConfigError(f"a {what} called {entry.name!r} is already registered")
    registry[entry.name] = entry
    return entry
