"""The models a server answers for: loaded, verified, warmed — and replaced without downtime.

Models come from artifact folders, ladders (``edgeopt ladder``: several artifacts of one model, the
server picks one per batch to meet ``--target-p99-ms``), early-exit models (``edgeopt exits``: the server
picks a threshold setting per batch the same way) or bundles (``edgeopt pack``) named on the command line, or
from a watched model repository laid out as Triton's: ``REPO/<model name>/<version number>/``
holding an artifact (manifest.json and its files), a ladder (ladder.json and its rungs) or an early-exit model
(exits.json and its stages), or ``REPO/<model name>/<version number>.edgeopt``,
a bundle (one file: moved into place, it appears whole). The highest version that loads is
served. Bundles are checked member by member and unpacked into the repository's private scratch
folder; an unpacked version is deleted once another replaces it. A new version is
opened (every file's sha256 checked against its manifest), loaded and run once on an
example input before it replaces the old one; one that fails any step is refused — logged,
counted, and not retried until its manifest changes — and the old version keeps answering.
Models are only ever read from the local filesystem, never fetched from a URL.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.artifact import MANIFEST, Artifact
from edgeopt.core.errors import ConfigError, EdgeoptError, InputError
from edgeopt.core.exits import EXITS_FILE, StagedExits, is_staged_exits
from edgeopt.core.ladder import LADDER_FILE, Ladder, is_ladder
from edgeopt.runtime.controller import ControlConfig, RungController
from edgeopt.serve.protocol import datatype_of
from edgeopt.tasks import Task, task_of

log = logging.getLogger("edgeopt.serve")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}
BUNDLE_SUFFIX = ".edgeopt"
MAX_PUBLISH_TRIES = 100


@dataclass
class ServedModel:
    """One loaded version of a model, ready to run batches."""

    name: str
    version: str
    artifact: Artifact
    session: Any = field(repr=False)
    load_seconds: float = 0.0
    output_types: list[str] = field(default_factory=list)
    task: Task | None = field(default=None, repr=False)  # what the outputs mean: /predict asks it
    score_threshold: float = 0.3

    @classmethod
    def load(cls, name: str, version: str, path: Path, threads: int | None = None,
             score_threshold: float = 0.3, instances: int = 1) -> "ServedModel":
        """Open (sha256-verified), load and warm ``path``; any failure is one EdgeoptError. ``instances``: batches
        the server will run at once, each on its share of ``threads`` (default: every CPU this process may use),
        where the backend allows it (else one batch at a time, on all of them)."""
        from edgeopt.backends import get_backend

        started = time.perf_counter()
        artifact = Artifact.open(path)
        task = task_of(artifact)  # an unknown task is refused before the model loads
        backend = get_backend(artifact.backend)
        if instances > 1 and backend.capabilities.concurrent_runs:
            from edgeopt.measure.environment import cpu_count

            threads = max(1, (threads or cpu_count()) // instances)
        session = backend.load(artifact, threads=threads, shared_cpu=True)  # beside the event loop
        model = cls(name, version, artifact, session, task=task, score_threshold=score_threshold)
        model.output_types = _warmed_output_types(model, path)
        model.load_seconds = time.perf_counter() - started
        return model

    @functools.cached_property
    def spec(self):
        return self.artifact.input_spec  # parsed once: every request is checked against it

    @property
    def runs_concurrently(self) -> bool:
        """Whether its session may run several batches at once (``--instances``)."""
        from edgeopt.backends import get_backend

        return get_backend(self.artifact.backend).capabilities.concurrent_runs

    @property
    def labels(self) -> list[str] | None:
        return self.artifact.manifest.get("labels") or None

    @property
    def fixed_batch(self) -> int | None:
        """The one batch size the artifact takes, when it was compiled for one (ExecuTorch)."""
        return None if self.spec.dynamic_batch else self.spec.shape[0]

    def preferred_batch(self, wanted: int) -> int:
        """The largest batch to gather for this artifact: ``wanted`` within what it accepts."""
        limit = self.spec.max_batch or wanted
        return max(1, min(wanted, limit))

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for ``batch``; a fixed-batch artifact runs it in chunks of its size, zero-padded."""
        size = self.fixed_batch
        if size is None:
            return self.session.run([batch])
        chunks = []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            chunks.append([out[:len(chunk)] for out in self.session.run([padded])])
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def check_input(self, name: str, array: np.ndarray) -> np.ndarray:
        """The request's input as the model takes it, or an InputError naming what is wrong."""
        if name != self.spec.name:
            raise InputError(f"model {self.name!r} has one input, {self.spec.name!r}; the request sent {name!r}")
        spec = self.spec
        if self.fixed_batch is not None and array.ndim == len(spec.shape) and len(array):
            spec = spec.with_batch(len(array))  # served in chunks of its own size: any batch is fine
        return spec.validate(array)

    def metadata(self) -> dict[str, Any]:
        """The protocol's model metadata."""
        sample = list(self.spec.sample_shape)
        outputs = [{"name": out.name, "datatype": kind, "shape": [-1, *out.shape[1:]]}
                   for out, kind in zip(self.artifact.outputs, self.output_types)]
        return {"name": self.name, "versions": [self.version],
                "platform": PLATFORMS.get(self.artifact.backend, self.artifact.backend),
                "inputs": [{"name": self.spec.name, "datatype": datatype_of(self.spec.dtype), "shape": [-1, *sample]}],
                "outputs": outputs,
                "parameters": {"task": self.task.name, "precision": self.artifact.precision,
                               "labels": self.labels, "max_batch": self.spec.max_batch}}


@dataclass
class ServedLadder(ServedModel):
    """A ladder served under one name: it answers as its rung 0 does (input, outputs, task, labels), and its
    batcher runs each batch on the rung the controller picks."""

    rungs: list[ServedModel] = field(default_factory=list, repr=False)
    ladder: Ladder | None = field(default=None, repr=False)
    control: ControlConfig | None = None

    @classmethod
    def load_ladder(cls, name: str, version: str, path: Path, control: ControlConfig | None, threads: int | None = None,
                    score_threshold: float = 0.3) -> "ServedLadder":
        if control is None:
            raise ConfigError(f"{path} is a ladder: serving it needs a latency target (--target-p99-ms), which picks "
                              "its rung for each batch")
        started = time.perf_counter()
        ladder = Ladder.open(path)
        rungs = [ServedModel.load(name, version, rung.artifact.path, threads, score_threshold) for rung in ladder.rungs]
        first = rungs[0]
        served = cls(name, version, first.artifact, first.session, task=first.task, score_threshold=score_threshold,
                     output_types=first.output_types, rungs=rungs, ladder=ladder, control=control)
        served.load_seconds = time.perf_counter() - started
        return served

    def preferred_batch(self, wanted: int) -> int:
        return min(rung.preferred_batch(wanted) for rung in self.rungs)

    def controller(self, max_batch: int) -> RungController:
        """A fresh controller seeded with the ladder's measured p50 per batch size."""
        return RungController.for_ladder(self.ladder, self.control, max_batch)

    @property
    def rung_names(self) -> tuple[str, ...]:
        return tuple(rung.name for rung in self.ladder.rungs)

    def metadata(self) -> dict[str, Any]:
        record = super().metadata()
        record["parameters"]["rungs"] = [{"name": rung.name, "backend": rung.artifact.backend,
                                          "precision": rung.artifact.precision, "quality": rung.quality}
                                         for rung in self.ladder.rungs]
        return record


@dataclass
class ServedExits(ServedLadder):
    """An early-exit model served under one name: its threshold settings are the rungs (accuracy first to fastest,
    one set of stage sessions shared by all), and the controller picks a setting per batch as it picks a ladder's
    rung — under load, more images leave at an early exit. It answers as its last stage does (the logits)."""

    staged: StagedExits | None = field(default=None, repr=False)

    @classmethod
    def load_exits(cls, name: str, version: str, path: Path, control: ControlConfig | None, threads: int | None = None,
                   score_threshold: float = 0.3) -> "ServedExits":
        from edgeopt.runtime.exits import ExitRunner, task_of_exits

        if control is None:
            raise ConfigError(f"{path} is an early-exit model: serving it needs a latency target (--target-p99-ms), "
                              "which picks its threshold setting for each batch")
        started = time.perf_counter()
        staged = StagedExits.open(path)
        task = task_of_exits(staged)  # an unknown task, or one needing a head, is refused before the stages load
        RungController.for_exits(staged, control, max_batch=1)  # refuses untimed settings before the stages load
        sessions = ExitRunner.load_sessions(staged.stages, threads)  # shared_cpu: the stages run one after another
        runners = [ExitRunner(sessions, setting.thresholds) for setting in staged.settings]
        served = cls(name, version, staged.stages[-1], runners[0], task=task, score_threshold=score_threshold,
                     rungs=runners, control=control, staged=staged)
        served.output_types = _warmed_output_types(served, path)  # accuracy first: every stage warmed and proved
        served.load_seconds = time.perf_counter() - started
        return served

    @functools.cached_property
    def spec(self):
        return self.staged.input_spec  # the first stage's: the image

    @property
    def labels(self) -> list[str] | None:
        return self.staged.labels

    def preferred_batch(self, wanted: int) -> int:
        return ServedModel.preferred_batch(self, wanted)

    def controller(self, max_batch: int) -> RungController:
        """A fresh controller seeded with each setting's p50 per batch size, timed on validation images."""
        return RungController.for_exits(self.staged, self.control, max_batch)

    @property
    def rung_names(self) -> tuple[str, ...]:
        return tuple(setting.name for setting in self.staged.settings)

    def metadata(self) -> dict[str, Any]:
        record = ServedModel.metadata(self)
        record["parameters"]["rungs"] = [{"name": s.name, "thresholds": list(s.thresholds), "quality": s.validation}
                                         for s in self.staged.settings]
        record["parameters"]["early_exits"] = len(self.staged.stages) - 1
        return record


def _warmed_output_types(model: ServedModel, path: Path) -> list[str]:
    """Run ``model`` once on an example input (warm, and prove it runs): its outputs' protocol datatypes, or an
    EdgeoptError when they are NaN or infinite."""
    outputs = model.infer(model.spec.example(batch=1))
    if not all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f"):
        raise EdgeoptError(f"{path} gives NaN or infinite outputs on an example input; refusing to serve it")
    return [datatype_of(o.dtype) for o in outputs]


@dataclass
class Refusal:
    version: str
    reason: str
    stamp: tuple[int, int] | None  # the manifest's (or bundle's) mtime and size when refused: a change is tried again


class ModelRepository:
    """Name -> the served version; loads named artifacts and watches a repository folder."""

    def __init__(self, artifacts: dict[str, Path] | None = None, watch: Path | None = None,
                 threads: int | None = None, score_threshold: float = 0.3, control: ControlConfig | None = None,
                 instances: int = 1) -> None:
        self.artifacts = dict(artifacts or {})
        self.instances = instances  # batches of a single model run at once (a ladder runs one: all threads each)
        self.control = control  # how a ladder picks its rungs; None: ladders are refused
        self.watch = watch
        self.threads = threads
        self.score_threshold = score_threshold
        self.models: dict[str, ServedModel] = {}
        self.refused: dict[str, Refusal] = {}
        self.unpacked: dict[str, Path] = {}  # model name -> the scratch folder its served version was unpacked to
        self._scratch: Path | None = None  # made on the first bundle; removed by close()
        for name in self.artifacts:
            check_name(name)
        if watch is not None and not watch.is_dir():
            raise ConfigError(f"model repository {watch} is not a folder; create it with one folder per model")

    def load_initial(self) -> None:
        """Load every named artifact (a failure here is the caller's error) and the repository's newest versions."""
        for name, path in self.artifacts.items():
            try:
                self.publish(self._load(name, "1", path))
            except EdgeoptError:
                raise
            except Exception as exc:  # the runtime's own error on a file it cannot run: one line, not a traceback
                raise EdgeoptError(f"cannot serve {path}: its runtime failed to load or run it ({exc}); "
                                   "export it again") from exc
        for name, version, path in self.pending():
            model = self.try_load(name, version, path)
            if model is not None:
                self.publish(model)
        if not self.models:
            raise ConfigError("no model to serve: name artifact folders, or a --model-repository with "
                              "<name>/<version>/manifest.json (or ladder.json, exits.json) inside")

    def pending(self) -> list[tuple[str, str, Path]]:
        """Repository versions newer than what is served and not refused as they stand."""
        if self.watch is None:
            return []
        found = []
        for folder in sorted(p for p in self.watch.iterdir() if p.is_dir() and NAME.match(p.name)):
            versions = _versions(folder)
            if not versions:
                continue
            number, path = versions[-1]
            served = self.models.get(folder.name)
            if served is not None and served.version.isdigit() and int(served.version) >= number:
                continue
            refused = self.refused.get(folder.name)
            if refused and refused.version == str(number) and refused.stamp == _stamp(path):
                continue
            found.append((folder.name, str(number), path))
        return found

    def try_load(self, name: str, version: str, path: Path) -> ServedModel | None:
        """Load ``path`` as ``name`` ``version`` (not yet served: see ``publish``); on failure record the
        refusal and keep what is served."""
        try:
            model = self._load(name, version, path)
        except Exception as exc:  # noqa: BLE001 — a bad new version, however it fails, must not stop the old one
            self.refused[name] = Refusal(version, str(exc), _stamp(path))
            kept = self.models.get(name)
            log.warning("refused %s version %s: %s (%s)", name, version, exc,
                        f"still serving version {kept.version}" if kept else "not serving it")
            return None
        self.refused.pop(name, None)
        return model

    def publish(self, model: ServedModel) -> None:
        """Serve ``model`` from now on under its name (the server calls this on its event loop, together with
        handing the model to the batcher, so a request never sees one version's name and another's outputs)."""
        previous = self.models.get(model.name)
        self.models[model.name] = model
        if previous is not model:
            log.info("serving %s version %s (loaded and warmed in %.2f s)", model.name, model.version,
                     model.load_seconds)
        folder = model.artifact.path
        if self._scratch is not None and folder.parent == self._scratch:
            replaced = self.unpacked.get(model.name)
            self.unpacked[model.name] = folder
            if replaced is not None and replaced != folder:
                # The old version's runtime already holds its model in memory (a mapped file stays readable
                # after its name is gone), and requests in flight on it finish normally.
                shutil.rmtree(replaced, ignore_errors=True)

    def close(self) -> None:
        """Remove the scratch folder that bundles were unpacked into."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
            self.unpacked.clear()

    def _load(self, name: str, version: str, path: Path) -> ServedModel:
        """``ServedModel.load`` of an artifact folder, or of a bundle file unpacked into the scratch folder
        (removed again if the version is refused)."""
        if is_ladder(path):
            return ServedLadder.load_ladder(name, version, path, self.control, self.threads, self.score_threshold)
        if is_staged_exits(path):
            return ServedExits.load_exits(name, version, path, self.control, self.threads, self.score_threshold)
        if not path.is_file():
            return ServedModel.load(name, version, path, self.threads, self.score_threshold, self.instances)
        from edgeopt.core.bundle import unpack

        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="edgeopt-serve-"))
        folder = self._scratch / f"{name}-{version}-{uuid.uuid4().hex[:8]}"
        try:
            unpack(path, folder)
            return ServedModel.load(name, version, folder, self.threads, self.score_threshold, self.instances)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigError(f"model name {name!r} must be letters, digits, '_', '.' or '-' (at most 64)")
    return name


def publish_version(repository: Path, name: str, artifact: Path) -> Path:
    """Place ``artifact`` (a folder) in ``repository`` as ``name``'s next version: one bundle file, written
    beside its place and renamed, so a watching server sees it whole or not at all. Returns its path.

    The version number is one above the highest there; a link that finds its number taken (another
    publisher, or an entry by that name that is not a version) takes the next.
    """
    from edgeopt.core.bundle import pack

    folder = Path(repository) / check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    data = pack(Path(artifact))
    partial = folder / f".{uuid.uuid4().hex}.partial"
    partial.write_bytes(data)
    try:
        number = max((n for n, _ in _versions(folder)), default=0) + 1
        for _ in range(MAX_PUBLISH_TRIES):
            target = folder / f"{number}{BUNDLE_SUFFIX}"
            try:
                target.hardlink_to(partial)  # appears whole, and never replaces a version that is there
                return target
            except FileExistsError:  # another publisher, or something else by that name: the next number
                number += 1
        raise ConfigError(f"{folder} has {MAX_PUBLISH_TRIES} names in the way of a new version; tidy it")
    finally:
        partial.unlink(missing_ok=True)


def _versions(folder: Path) -> list[tuple[int, Path]]:
    """A model folder's versions, lowest first: ``<n>/`` folders holding a manifest and ``<n>.edgeopt``
    bundles (where both exist for one number, the folder)."""
    found: dict[int, Path] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(BUNDLE_SUFFIX) and entry.name[:-len(BUNDLE_SUFFIX)].isdigit() and entry.is_file():
            found.setdefault(int(entry.name[:-len(BUNDLE_SUFFIX)]), entry)
    for entry in folder.iterdir():
        if entry.name.isdigit() and entry.is_dir() and any((entry / record).is_file()
                                                           for record in (MANIFEST, LADDER_FILE, EXITS_FILE)):
            found[int(entry.name)] = entry
    return sorted(found.items())


def _stamp(path: Path) -> tuple[int, int] | None:
    """What identifies a version as it stands: its manifest's (a bundle's own) mtime and size; a ladder's (an
    early-exit model's), the latest mtime and total size of its record and its rungs' (stages') manifests (a member
    that arrives late is a change)."""
    try:
        if is_ladder(path) or is_staged_exits(path):
            files = [path / LADDER_FILE, *path.glob(f"r[0-9]/{MANIFEST}")] if is_ladder(path) else \
                [path / EXITS_FILE, *path.glob(f"s[0-9]/{MANIFEST}")]
            stats = [f.stat() for f in files]
            return max(st.st_mtime_ns for st in stats), sum(st.st_size for st in stats)
        status = (path if path.is_file() else path / MANIFEST).stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size
