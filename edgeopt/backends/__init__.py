"""The runtime registry: every module in this package that defines ``BACKEND`` is a backend.

Nothing here lists backends by hand; adding ``backends/<runtime>.py`` is enough. A
backend that lives outside edgeopt (a plugin) joins with ``register_backend``.
Importing a backend module is cheap: runtime libraries load only when used.

Example:
    >>> [b.name for b in all_backends()]            # doctest: +SKIP
    ['eager', 'torchscript', 'onnxruntime', 'openvino', 'executorch', 'tensorrt']
"""

from __future__ import annotations

import os
from functools import lru_cache

from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session
from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import add, discover

__all__ = ["Backend", "Capabilities", "CompileResult", "Session", "all_backends", "get_backend", "open_session",
           "register_backend"]


@lru_cache(maxsize=1)
def _registry() -> dict[str, Backend]:
    return discover(__name__, __path__, "BACKEND", Backend, skip=("base",))


def register_backend(backend: Backend) -> Backend:
    """Add a backend defined outside edgeopt; its name must not shadow a built-in one."""
    return add(_registry(), backend, Backend, "backend")


def all_backends() -> list[Backend]:
    """Every registered backend, available here or not, in display order."""
    return sorted(_registry().values(), key=lambda backend: backend.order)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ConfigError listing the known names otherwise."""
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(registry)}")
    return registry[name]


def open_session(path: str | os.PathLike, threads: int | None = None) -> Session:
    """Verify the artifact folder at ``path`` and load it with its own backend.

    This is all an edge box needs: for ONNX Runtime and OpenVINO artifacts it imports
    neither torch nor any other backend's runtime.
    """
    from edgeopt.core.artifact import Artifact

    artifact = Artifact.open(path)
    return get_backend(artifact.backend).load(artifact, threads=threads)
