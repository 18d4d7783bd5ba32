"""The pass registry: every module in this package that defines ``PASS`` is a pass.

A pass defined elsewhere joins with ``register_pass`` (from the module that defines it,
so importing that module registers it), or through the ``edgeopt.passes`` entry-point
group of an installed package. A recipe step of a pass from outside edgeopt records that
module; a recipe is a file, so ``edgeopt build`` imports that module only when it is an
installed entry point or the user names it (``--plugin MODULE``): ``edgeopt.core.trust``.

Example:
    >>> sorted(p.name for p in all_passes())[:3]
    ['distill', 'early_exit', 'finetune']
"""

from __future__ import annotations

from functools import lru_cache

from edgeopt.core.errors import ConfigError
from edgeopt.passes.base import FineTune, Pass, PassConfig, PassContext, SearchRequest, SearchStep, TrainConfig
from edgeopt.core.registry import add, add_installed, discover
from edgeopt.core.trust import PASSES_GROUP, import_object

__all__ = ["FineTune", "Pass", "PassConfig", "PassContext", "SearchRequest", "SearchStep", "TrainConfig", "all_passes",
           "get_pass", "register_pass"]
HELPERS = ("base", "train", "kd")  # modules of this package that are not passes


@lru_cache(maxsize=1)
def _registry() -> dict[str, Pass]:
    return add_installed(discover(__name__, __path__, "PASS", Pass, skip=HELPERS), "edgeopt.passes", Pass)


def register_pass(technique: Pass) -> Pass:
    """Add a pass defined outside edgeopt; its name must not shadow a built-in one."""
    return add(_registry(), technique, Pass, "pass")


def all_passes() -> list[Pass]:
    return list(_registry().values())


def get_pass(name: str, module: str | None = None, origin: str | None = None) -> Pass:
    """The pass called ``name``; ``module`` (a plugin's module) is imported first if it is not known yet —
    when ``origin`` (the file that named it) is given, only if ``edgeopt.core.trust`` allows it."""
    registry = _registry()
    if name not in registry and module:
        try:
            import_object(module, origin, flag="--plugin", group=PASSES_GROUP)
        except ImportError as exc:
            raise ConfigError(f"cannot import {module!r}, which should define the pass {name!r} ({exc})") from None
    if name not in registry:
        raise ConfigError(f"unknown pass {name!r}; passes are {', '.join(sorted(registry))}"
                          + (f" (and {module} registered none of that name)" if module else ""))
    return registry[name]
