"""What a cluster's worker does with one build, and how its files travel (no cluster library here).

The search sends a ``BuildJob`` (the recipe, the baseline's recipe, the thread count, the seconds
left, the cached models the recipe's steps start from) and, once per search, the baseline's model
file and data file as bytes (``sources``). The worker builds the candidate in a temporary folder
with the same ``building.build_candidate`` a local search runs, with the same seed and thread count
(so the same weights and artifact bytes), and answers with its ``Built`` record and the files it
made: the candidate's folder and every model its steps cached (with their training checkpoints only
when the build stopped, to be continued). Nothing stays on the worker.

Files travel as an uncompressed tar (weights compress little); unpacking takes regular files only,
under the folders a build writes (``candidates/<hash>/``, ``models/``), nothing else.

Example:
    >>> data = pack_files(Path("out"), [Path("models/abc.safetensors")])   # doctest: +SKIP
    >>> unpack_files(data, Path("elsewhere"), ("models/",))                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable

from edgeopt.core.deadline import Deadline
from edgeopt.core.errors import ConfigError
from edgeopt.pipeline.builder import cached_model_name, checkpoint_name
from edgeopt.search.building import Built, build_candidate, candidate_folder

if TYPE_CHECKING:
    from edgeopt.pipeline.builder import BuildContext
    from edgeopt.pipeline.recipe import Recipe


@dataclass(frozen=True)
class BuildJob:
    recipe: "Recipe"
    base: "Recipe"  # the baseline: model, data, seed, arch (model and data as the search names them)
    source: str  # the baseline's source as its manifest records it (the same wherever it is built)
    threads: int | None
    deadline_unix_s: float  # the search's deadline on the wall clock (its monotonic clock is its own)
    cache: bytes  # models/<prefix>.safetensors (and .train.pt) the recipe's steps start from
    version: str  # edgeopt's on the search's machine: a worker must run the same
    sources_sha256: str  # of the baseline's files: a worker's cached context is this search's


def digest(sources: dict[str, tuple[str, bytes]]) -> str:
    sha = hashlib.sha256()
    for role, (name, data) in sorted(sources.items()):
        sha.update(f"{role}\0{name}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()


def files_of(recipe: "Recipe") -> Callable[[str], bool]:
    """Whether a name (relative to the search folder) is one a build of ``recipe`` makes or starts from: the
    cached models of its own step prefixes (and their training checkpoints), its artifact and its build log.
    Its recipe.toml is written by the search, never taken from a worker."""
    models = {name.as_posix() for name in _model_names(recipe)}
    folder = candidate_folder(Path(""), recipe).as_posix()
    return lambda name: name in models or name == f"{folder}/build.log" or name.startswith(f"{folder}/artifact/")


def sources_of(base: "Recipe") -> dict[str, tuple[str, bytes]]:
    """The baseline's model and data files as bytes, by role ("model", "data"), for the workers: a name that is
    not a file (torchvision:resnet18, digits) is sent as the name. A data folder cannot travel."""
    sources = {}
    for role, name in (("model", base.model), ("data", base.data)):
        path = Path(name)
        if path.is_file():
            sources[role] = (path.name, path.read_bytes())
        elif path.is_dir():
            raise ConfigError(f"the {role} {name} is a folder: a cluster's workers get the search's files as bytes, "
                              "one file each; pack the dataset into one file (e.g. .npz), or search without --cluster")
    return sources


def cached_models(context: "BuildContext", recipe: "Recipe") -> list[Path]:
    """The cached models (and training checkpoints) of ``recipe``'s step prefixes present here, relative to
    the search folder: what a worker needs to continue from where this machine is."""
    return [name for name in _model_names(recipe) if (context.workdir / name).is_file()]


def _model_names(recipe: "Recipe") -> list[Path]:
    """The cached model and training checkpoint of each of ``recipe``'s step prefixes (the builder's names)."""
    return [name for steps in range(1, len(recipe.steps) + 1)
            for name in (cached_model_name(recipe, steps), checkpoint_name(recipe, steps))]


_CONTEXTS: dict[tuple, "BuildContext"] = {}  # per worker process: the baseline and its data load once


def build_remotely(job: BuildJob, sources: dict[str, tuple[str, bytes]]) -> tuple[Built, bytes]:
    """Run on a worker: build ``job.recipe`` in a temporary folder; (its Built record, its files packed)."""
    import edgeopt

    deadline = Deadline.after(job.deadline_unix_s - time.time())  # before anything else: loading counts too
    node = socket.gethostname()
    if job.version != edgeopt.__version__:
        return Built("failed", f"the worker node {node} runs edgeopt {edgeopt.__version__}, the search "
                               f"{job.version}: install the same version on every node", built_on=node), b""
    with tempfile.TemporaryDirectory(prefix="edgeopt-build-") as folder:
        root = Path(folder)
        context = dataclasses.replace(_context(job, sources, root), workdir=root)
        unpack_files(job.cache, root, files_of(job.recipe))
        before = _stamps(root / "models")
        built = build_candidate(job.recipe, context, root, deadline)
        built.built_on = node
        made = [p for p, stamp in _stamps(root / "models").items() if before.get(p) != stamp
                and (not built.ok or not p.name.endswith(".train.pt"))]  # a step's checkpoint: only to resume it
        made += [p for p in candidate_folder(root, job.recipe).rglob("*") if p.is_file()]
        returned = files_of(job.recipe)  # what the search takes back (its recipe.toml is its own; scratch stays)
        return built, pack_files(root, [p.relative_to(root) for p in made if returned(p.relative_to(root).as_posix())])


def _context(job: BuildJob, sources: dict[str, tuple[str, bytes]], scratch: Path) -> "BuildContext":
    from edgeopt.pipeline.builder import BuildContext

    key = (job.base.hash, job.threads, job.sources_sha256)
    if key not in _CONTEXTS:
        local = {}
        for role, (name, data) in sources.items():  # files only while loading: the context keeps what it read
            path = scratch / "sources" / role / Path(name).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            local[role] = str(path)
        base = dataclasses.replace(job.base, model=local.get("model", job.base.model),
                                   data=local.get("data", job.base.data))
        context = BuildContext.create(base, scratch, job.threads, show_progress=False)
        # the manifest records the baseline's source: the search's name for it, not this temporary copy
        context.baseline = dataclasses.replace(context.baseline, source=job.source)
        _CONTEXTS.clear()  # one search at a time per worker process
        _CONTEXTS[key] = context
    elif job.threads:
        import torch

        torch.set_num_threads(job.threads)
    return _CONTEXTS[key]


def _stamps(folder: Path) -> dict[Path, tuple[int, int]]:
    """Size and modification time of every file under ``folder``: what a build changed shows against them."""
    if not folder.is_dir():
        return {}
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def pack_files(root: Path, names: list[Path]) -> bytes:
    """The files ``names`` (relative to ``root``) as an uncompressed tar (no bytes for no files)."""
    if not names:
        return b""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            tar.add(root / name, arcname=name.as_posix(), recursive=False)
    return buffer.getvalue()


def unpack_files(data: bytes, root: Path, allowed: Callable[[str], bool]) -> list[Path]:
    """Write the regular files of the tar ``data`` under ``root``, each name one ``allowed`` accepts; a link,
    a device, an absolute or climbing path or any other name refuses the whole tar before anything is
    written (``ConfigError``). Each file is written beside its place and renamed over it: a reader (or a
    kill -9) sees the old file or the new one, never half of one."""
    if not data:
        return []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            for member in members:
                name = member.name
                if (not member.isfile() or name.startswith("/") or ".." in PurePosixPath(name).parts
                        or not allowed(name)):
                    raise ConfigError(f"a build's files hold {name!r}, which is not one of the files that build "
                                      "makes: refused, nothing written")
            written = []
            for member in members:
                target = root / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                with tar.extractfile(member) as source, open(partial, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                os.replace(partial, target)
                written.append(target)
    except (tarfile.TarError, OSError) as exc:
        raise ConfigError(f"a build's files could not be unpacked ({exc}): refused") from None
    return written
