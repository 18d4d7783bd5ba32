"""Trust: what the person running edgeopt vouches for — the one gate where a name becomes code.

Every file and request is data from a stranger. Some of them name code: a checkpoint records
the architecture that rebuilds it (``mypkg.nets:build``), an artifact's manifest its
architecture, a recipe the plugin module that defines one of its passes; and TorchScript and
``.pt2`` archives are programs. None of that runs because a file says so. A name read from a
file becomes an import only when it is

- **known**: edgeopt's own architectures (``BUILT_IN``), or a plugin installed through the entry
  points ``edgeopt.architectures`` (an architecture's ``module:callable``) or ``edgeopt.passes``;
- **granted**: the user named it in this process — on the command line (``--arch``,
  ``--plugin``, ``--students``, a model source argument) or as an argument in Python; or
- **trusted with its file**: the user passed ``--trust-model`` (``trusting(programs=True)``),
  which also lets TorchScript and ``.pt2`` programs load, wherever they come from.

A program edgeopt compiled in this process (a TorchScript artifact ``bench`` or ``optimize``
just built from the user's model) is recorded by its sha256 (``made_program``) and loads
without the flag; the same file, found later on disk, needs it.

Names the caller writes (``origin=None``) are granted as they resolve, so a checkpoint edgeopt
writes for a model the user named reloads in the same run. The grants live in this process;
``snapshot``/``restore`` carry them to a measuring child process.

Example:
    >>> check_import("mypkg.nets:build", origin="ckpt.safetensors", flag="--arch")
    Traceback (most recent call last):
    ...
    edgeopt.core.trust.UntrustedName: ckpt.safetensors asks to import 'mypkg.nets:build'; edgeopt imports no code a file names: if you trust it, pass --arch mypkg.nets:build (or install it as an edgeopt.architectures entry point), or --trust-model to trust the file
    >>> with trusting(names=("mypkg.nets:build",)):
    ...     check_import("mypkg.nets:build", origin="ckpt.safetensors", flag="--arch")
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, Iterator

from edgeopt.core.errors import ModelSourceError

# edgeopt's own architectures: a file may name these (its own checkpoints do)
BUILT_IN = frozenset({"edgeopt.models.zoo:tiny_cnn", "edgeopt.models.zoo:micro_cnn", "edgeopt.models.zoo:mlp",
                      "edgeopt.models.detectors:ssdlite",
                      "edgeopt.models.detectors:ssd_tiny"})
# where edgeopt's architectures lived before edgeopt.models: checkpoints made then record these module names
RENAMED = {"edgeopt.zoo": "edgeopt.models.zoo", "edgeopt.detectors": "edgeopt.models.detectors"}
ARCHITECTURES_GROUP, PASSES_GROUP = "edgeopt.architectures", "edgeopt.passes"


class UntrustedName(ModelSourceError):
    """A file named code (an import path, a program) that the user has not vouched for."""


@dataclass(frozen=True)
class Grants:
    """What this process may load: programs (``--trust-model``) and import paths the user named."""

    programs: bool = False
    names: frozenset[str] = field(default_factory=frozenset)
    made: frozenset[str] = field(default_factory=frozenset)  # sha256 of programs this process compiled
    plugins: tuple[str, ...] = ()  # modules the user loaded (--plugin): a measuring child loads them too

    def allows(self, name: str, group: str) -> bool:
        return self.programs or name in self.names or name in BUILT_IN or name in _installed(group)


_grants = Grants()


@lru_cache(maxsize=None)
def _installed(group: str) -> frozenset[str]:
    """What installed packages declare in ``group``: ``module:attr`` values, and their modules alone."""
    values = {entry.value.split("[")[0].strip() for entry in entry_points(group=group)}
    return frozenset(values | {value.partition(":")[0] for value in values})


def grant(*names: str) -> None:
    """Let these import paths (``module:attr`` or a module) load wherever they are named, in this process."""
    global _grants
    _grants = replace(_grants, names=_grants.names | {import_path(n) for n in names if n})


def trust_programs() -> None:
    """``--trust-model``: files are trusted like code — TorchScript/.pt2 load, names in files resolve."""
    global _grants
    _grants = replace(_grants, programs=True)


def made_program(sha256: str) -> None:
    """Record a program this process compiled itself: it loads here (and in its measuring child) unasked."""
    global _grants
    _grants = replace(_grants, made=_grants.made | {sha256})


def programs_trusted() -> bool:
    return _grants.programs


@contextlib.contextmanager
def trusting(programs: bool = False, names: tuple[str, ...] = ()) -> Iterator[None]:
    """Grant these for the duration of a ``with`` block (tests; a Python caller vouching for one load)."""
    global _grants
    before = _grants
    _grants = replace(before, programs=before.programs or programs,
                      names=before.names | {import_path(n) for n in names})
    try:
        yield
    finally:
        _grants = before


def load_plugin(module: str) -> Any:
    """``--plugin MODULE``: import a module the user names, so the passes, tasks and backends it defines
    register; recorded, so a measuring child process loads it too."""
    global _grants
    loaded = import_object(module, origin=None, flag="--plugin")
    if module not in _grants.plugins:
        _grants = replace(_grants, plugins=(*_grants.plugins, module))
    return loaded


def snapshot() -> dict[str, Any]:
    """The grants as JSON, for a child process that measures what this one built."""
    return {"programs": _grants.programs, "names": sorted(_grants.names), "made": sorted(_grants.made),
            "plugins": list(_grants.plugins)}


def restore(data: dict[str, Any]) -> None:
    """The grants of ``snapshot`` in this (child) process, and the plugins the parent loaded, loaded here."""
    global _grants
    _grants = Grants(bool(data.get("programs")), frozenset(str(n) for n in data.get("names", ())),
                     frozenset(str(n) for n in data.get("made", ())))
    for module in data.get("plugins", ()):
        load_plugin(str(module))


def current_name(source: str) -> str:
    """``source`` (``module:attr?args``) with an architecture of edgeopt's under its module now
    (``edgeopt.zoo:tiny_cnn?num_classes=3`` -> ``edgeopt.models.zoo:tiny_cnn?num_classes=3``): what a model
    built from an old checkpoint records."""
    module, colon, rest = source.strip().partition(":")
    return RENAMED.get(module, module) + colon + rest


def import_path(source: str) -> str:
    """``pkg.mod:factory?num_classes=3`` -> ``pkg.mod:factory``: what is imported, without its arguments (an
    architecture of edgeopt's under the module name it had before, under its module now)."""
    return current_name(source.partition("?")[0])


def check_import(name: str, origin: str | None, flag: str, group: str = ARCHITECTURES_GROUP) -> None:
    """Refuse ``name`` (an import path read from ``origin``) unless it is known, granted or its file trusted.

    ``origin`` None means the caller wrote the name: it is granted. ``flag`` is the option that
    vouches for such a name on the command line (``--arch``, ``--plugin``).
    """
    path = import_path(name)
    if origin is None:
        grant(path)
        return
    if not _grants.allows(path, group):
        raise UntrustedName(f"{origin} asks to import {path!r}; edgeopt imports no code a file names: if you trust "
                            f"it, pass {flag} {path} (or install it as an {group} entry point), or --trust-model to "
                            "trust the file")


def import_object(name: str, origin: str | None, flag: str = "--arch", group: str = ARCHITECTURES_GROUP) -> Any:
    """The object at ``module:attr`` once ``check_import`` lets it through; ModelSourceError if it is not there."""
    check_import(name, origin, flag, group)
    module_name, _, attr = import_path(name).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSourceError(f"cannot import {module_name!r} for {name!r} ({exc}); is it installed or on "
                               "PYTHONPATH?") from None
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelSourceError(f"module {module_name!r} has no attribute {attr!r}") from None


def require_programs(what: str, sha256: str | None = None) -> None:
    """Refuse to load ``what`` (a program: TorchScript, .pt2, a TensorRT engine) unless the user passed --trust-model or this
    process compiled it (``sha256`` recorded by ``made_program``)."""
    if not _grants.programs and (sha256 is None or sha256 not in _grants.made):
        raise UntrustedName(f"{what}: a program, which runs code when loaded; pass --trust-model (export, bench, "
                            "profile, predict, eval, build, serve) only for a file you made or trust; to train, "
                            "prune, distill or quantize it, save its weights as .safetensors and pass --arch")
