"""Artifact: a folder holding a compiled model's file(s) and its ``manifest.json``.

The manifest records everything needed to run and trust the model without the code
that made it: backend, precision, InputSpec, outputs, task, labels, source, the sha256
of every file, the versions that built it, and parity against the FP32 reference.

Writing is atomic: files go into a hidden temporary sibling folder, the manifest is
written last, and only then is the folder renamed into place, so an interrupted compile
never leaves something that looks finished. Opening verifies every file's sha256.

Example:
    >>> art = Artifact.open("out/mobilenet_ort")        # doctest: +SKIP
    >>> art.backend, art.precision, art.size_bytes       # doctest: +SKIP
    ('onnxruntime', 'fp32', 13963712)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeopt.core.errors import ArtifactError, ConfigError, ModelSourceError
from edgeopt.core.spec import InputSpec, OutputSpec

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
# Libraries whose version can change what an artifact computes; recorded when installed.
RECORDED_PACKAGES = (
    "edgeopt", "numpy", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript",
    "openvino", "executorch", "tensorrt", "nncf", "torchao",
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """Versions of the installed packages among ``packages``, read without importing them."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder and its manifest."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.manifest["input"])

    @property
    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec.from_dict(o) for o in self.manifest["outputs"]]

    @property
    def entry(self) -> Path:
        """The main model file the backend loads."""
        return self.path / self.manifest["entry"]

    @property
    def size_bytes(self) -> int:
        """The bytes a device holds: every file but those ``derived`` from another (the C array of a flatbuffer)."""
        derived = set(self.manifest.get("derived") or ())
        return sum(f["bytes"] for name, f in self.manifest["files"].items() if name not in derived)

    @property
    def parity(self) -> dict[str, Any] | None:
        return self.manifest.get("parity")

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Artifact":
        """Read an artifact folder; with ``verify``, check every file against its sha256."""
        folder = Path(path)
        if not folder.is_dir():
            raise ArtifactError(f"artifact folder {folder} does not exist; export one with `edgeopt export`")
        manifest = _read_manifest(folder)
        artifact = cls(folder, manifest)
        if verify:
            artifact.verify()
        return artifact

    def verify(self) -> None:
        """Raise ArtifactError naming the first file that is missing, truncated or altered."""
        for name, record in self.manifest["files"].items():
            file = self.path / name
            if not file.is_file():
                raise ArtifactError(
                    f"artifact {self.path} is incomplete: {name} (listed in its manifest) is missing; "
                    "export it again"
                )
            size = file.stat().st_size
            if size < record["bytes"]:
                raise ArtifactError(
                    f"artifact {self.path}: {name} is truncated ({size} of {record['bytes']} bytes); "
                    "export it again"
                )
            if size != record["bytes"] or sha256_of(file) != record["sha256"]:
                raise ArtifactError(
                    f"artifact {self.path}: {name} does not match the sha256 in its manifest "
                    "(altered after export, or the manifest was edited); export it again"
                )
        self._check_onnx_files()

    def _check_onnx_files(self) -> None:
        """Every ONNX model in the artifact keeps its external data inside the folder: edgeopt checks it here,
        when the artifact (or an unpacked bundle) is opened, not leaving it to each runtime's own checks."""
        from edgeopt.core.formats import HEAD, sniff_bytes
        from edgeopt.core.onnx_external import NotOnnx, check_external_data

        for name in self.manifest["files"]:
            file = self.path / name
            with open(file, "rb") as handle:
                kind = sniff_bytes(handle.read(HEAD))
            # An ONNX model's fields may come in any order, so an entry that shows no known format is parsed
            # too: if it is ONNX, a runtime would read it as such (a TensorRT engine, say, does not parse).
            maybe = file == self.entry and kind in ("unknown", "tflite")  # TFL3 at bytes 4-8 may be an ONNX field
            if name.lower().endswith(".onnx") or kind == "onnx" or maybe:
                try:
                    check_external_data(file)
                except ModelSourceError as exc:
                    if maybe and isinstance(exc, NotOnnx):
                        continue  # not ONNX after all: no runtime reads it as ONNX either
                    raise ArtifactError(f"artifact {self.path}: {exc}") from None


def _read_manifest(folder: Path) -> dict[str, Any]:
    file = folder / MANIFEST
    if not file.is_file():
        raise ArtifactError(
            f"{folder} has no {MANIFEST}: it is not an edgeopt artifact, or its export was interrupted; "
            "export it again"
        )
    return parse_manifest(file.read_bytes(), str(file))


def parse_manifest(text: bytes, where: str) -> dict[str, Any]:
    """A manifest's JSON, checked for the fields every reader needs (``where`` names it in errors)."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, a number of thousands of digits
        raise ArtifactError(f"{where} is not valid JSON ({exc}); export the artifact again") from None
    except RecursionError:  # the parser's own bound on nesting: no manifest nests past a few levels
        raise ArtifactError(f"{where} nests deeper than any manifest does; export the artifact again") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where} is not a JSON object; export the artifact again")
    missing = [k for k in ("schema", "backend", "precision", "input", "outputs", "entry", "files") if k not in manifest]
    if missing:
        raise ArtifactError(f"{where} lacks required fields {missing}; export the artifact again")
    if not isinstance(manifest["files"], dict) or not isinstance(manifest["schema"], int):
        raise ArtifactError(f"{where} is malformed (files must be an object, schema an integer); export it again")
    for name in [*manifest["files"], manifest["entry"]]:
        if not _inside(name):
            raise ArtifactError(f"{where} names the file {name!r}, outside its artifact folder; an artifact's files "
                                "are relative paths inside it: refusing it")
    for name, record in manifest["files"].items():
        if not _file_record(record):
            raise ArtifactError(f"{where}: the record of {name!r} needs \"sha256\" (64 hex digits) and \"bytes\" "
                                "(a whole number); export the artifact again")
    if manifest["entry"] not in manifest["files"]:
        raise ArtifactError(f"{where}: its entry {manifest['entry']!r} is not among its files; export it again")
    if manifest["schema"] > SCHEMA_VERSION:
        raise ArtifactError(
            f"{where} uses manifest schema {manifest['schema']}, newer than this edgeopt understands "
            f"({SCHEMA_VERSION}); upgrade edgeopt"
        )
    derived = manifest.get("derived", [])
    if not isinstance(derived, list) or not all(isinstance(n, str) and n in manifest["files"] for n in derived) \
            or manifest["entry"] in derived:
        raise ArtifactError(f"{where}: \"derived\" must list some of its files other than its entry; export it again")
    if not isinstance(manifest.get("compile", {}), dict):
        raise ArtifactError(f"{where}: \"compile\" must be an object; export it again")
    return manifest


def _file_record(record: object) -> bool:
    """Whether ``record`` is a file's record as ``ArtifactWriter`` writes it: its sha256 and byte count."""
    if not isinstance(record, dict):
        return False
    digest, size = record.get("sha256"), record.get("bytes")
    return (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
            and isinstance(size, int) and not isinstance(size, bool) and size >= 0)


def _inside(name: object) -> bool:
    """Whether ``name`` is a relative path that stays inside its folder (no absolute path, drive or '..')."""
    from pathlib import PurePosixPath, PureWindowsPath

    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return not (posix.is_absolute() or windows.drive or windows.root or ".." in posix.parts)


class StagedFolder:
    """Stage a folder in a hidden temporary sibling and move it into place only when finished.

    Use as a context manager; on an exception the staging folder is removed and ``out`` is left
    exactly as it was. What makes the folder finished (a manifest, a ladder record) is written
    last by the subclass, then ``move_into_place``.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        self.dir: Path | None = None

    def __enter__(self):
        if self.out.exists() and not self.overwrite:
            raise ConfigError(f"{self.out} already exists; choose another --out or pass --force to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.dir is not None and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def move_into_place(self) -> None:
        """Rename the staged folder to ``out`` (replacing an old one if allowed)."""
        assert self.dir is not None, "used outside its with-block"
        trash = None
        if self.out.exists():
            trash = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, trash)
        os.replace(self.dir, self.out)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self.dir = None


class ArtifactWriter(StagedFolder):
    """Stage an artifact; ``write_manifest`` hashes its files, ``commit`` moves it into place."""

    def __enter__(self) -> "ArtifactWriter":
        return super().__enter__()

    def write_manifest(self, manifest: dict[str, Any]) -> Artifact:
        """Hash every staged file, write the manifest, and return the (still staged) Artifact."""
        assert self.dir is not None, "ArtifactWriter used outside its with-block"
        files = {}
        for file in sorted(p for p in self.dir.rglob("*") if p.is_file() and p.name != MANIFEST):
            files[file.relative_to(self.dir).as_posix()] = {"sha256": sha256_of(file), "bytes": file.stat().st_size}
        if manifest["entry"] not in files:
            raise ArtifactError(f"backend did not write its entry file {manifest['entry']}")
        full = {
            "schema": SCHEMA_VERSION,
            **manifest,
            "files": files,
            "versions": installed_versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json_atomic(self.dir / MANIFEST, full)
        return Artifact(self.dir, full)

    def commit(self) -> Artifact:
        """Move the staged folder to ``out`` (replacing an old one if allowed)."""
        assert self.dir is not None and (self.dir / MANIFEST).is_file(), "write_manifest() first"
        self.move_into_place()
        return Artifact.open(self.out, verify=False)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
