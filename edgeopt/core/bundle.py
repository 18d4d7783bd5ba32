"""Artifact bundles: an artifact folder as one uncompressed tar, and reading one that came from elsewhere.

A bundle is how an artifact travels to a device agent (and, later, to a server): the
manifest and every file it lists, flat, nothing else. Reading one trusts nothing in it.
Every member is checked in memory before anything is written: a regular file (no links,
devices or folders), a plain name (no ``/``, no ``..``, no absolute path), within the size
and count caps, listed in the manifest with the sha256 it actually has, and not a pickle
or a zip archive (TorchScript, ``.pt`` and ``.pt2`` are zip archives of pickles: programs,
not data). A refused bundle writes nothing.

Example:
    >>> data = pack(Path("out/tiny-ort"))                                   # doctest: +SKIP
    >>> bundle = read_bundle(data, BundleLimits(), backends=("onnxruntime",))  # doctest: +SKIP
    >>> bundle.write(Path("store/1234")).backend                            # doctest: +SKIP
    'onnxruntime'
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.core.artifact import MANIFEST, Artifact, parse_manifest
from edgeopt.core.errors import ArtifactError, ModelSourceError
from edgeopt.core.formats import HEAD, sniff_bytes

# A member name is one plain file name: letters, digits, dot, dash, underscore; no leading dot.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BundleLimits:
    max_bytes: int = 512 << 20  # all members together
    max_members: int = 64
    max_manifest_bytes: int = 1 << 20


@dataclass
class Bundle:
    """A bundle read and checked in memory: the manifest, its files, and the extra members asked for."""

    manifest: dict[str, Any]
    manifest_bytes: bytes
    files: dict[str, bytes]
    extras: dict[str, bytes] = field(default_factory=dict)

    def write(self, folder: Path) -> Artifact:
        """Write the artifact into ``folder`` (which must not exist) and open it, verified."""
        folder.mkdir(parents=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        (folder / MANIFEST).write_bytes(self.manifest_bytes)
        return Artifact.open(folder)


def unpack(bundle: Path, out: Path, limits: BundleLimits = BundleLimits(), overwrite: bool = False) -> Artifact:
    """The bundle file at ``bundle`` checked (``read_bundle``), then written as the artifact folder ``out``:
    staged beside it and renamed into place, so a refused or interrupted unpack leaves nothing."""
    import shutil
    import tempfile

    from edgeopt.core.errors import ConfigError

    if not bundle.is_file():
        raise ArtifactError(f"bundle {bundle} does not exist")
    if bundle.stat().st_size > limits.max_bytes:
        raise ArtifactError(f"bundle {bundle} is over the {limits.max_bytes >> 20} MB cap")
    try:
        checked = read_bundle(bundle.read_bytes(), limits)
    except ArtifactError as exc:  # the refusal names the file: a server may be unpacking several
        raise ArtifactError(f"{bundle}: {exc}") from None
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        checked.write(staging / "artifact")
        if out.exists():
            shutil.rmtree(out)
        (staging / "artifact").rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Artifact.open(out)


def pack(folder: Path, extras: dict[str, bytes] | None = None) -> bytes:
    """The artifact in ``folder`` (verified first) as an uncompressed tar; ``extras``: more members by name."""
    artifact = Artifact.open(folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in [MANIFEST, *artifact.manifest["files"]]:
            tar.add(artifact.path / name, arcname=name, recursive=False)
        for name, data in (extras or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def executable_format(head: bytes, size: int | None = None) -> str | None:
    """What executable container ``head`` (a file's first bytes) starts, or None for data."""
    kind = sniff_bytes(head, size)
    if kind == "pickle":
        return "a Python pickle"
    if kind == "zip":
        return "a zip archive (TorchScript, .pt and .pt2 files are zip archives of pickled code)"
    return None


def check_name(name: str, where: str) -> None:
    if not SAFE_NAME.match(name) or ".." in name:
        raise ArtifactError(f"{where}: member name {name!r} is not a plain file name (no folders, '..' or absolute "
                            "paths); pack the artifact with `edgeopt pack` or edgeopt.core.bundle.pack")


def read_bundle(data: bytes, limits: BundleLimits, backends: tuple[str, ...] | None = None,
                extras: tuple[str, ...] = ()) -> Bundle:
    """Check a bundle in memory (see the module docstring); raise ArtifactError naming what is wrong.

    ``backends``: the artifact backends accepted (None: any); ``extras``: member names that are not
    part of the artifact and are returned separately (e.g. the probe inputs a host sends an agent).
    """
    if len(data) > limits.max_bytes:
        raise ArtifactError(f"bundle of {len(data) / 2**20:.1f} MB is over the {limits.max_bytes / 2**20:.0f} MB cap")
    members = _members(data, limits)
    if MANIFEST not in members:
        raise ArtifactError(f"bundle has no {MANIFEST}: it is not an edgeopt artifact bundle")
    manifest_bytes = members.pop(MANIFEST)
    if len(manifest_bytes) > limits.max_manifest_bytes:
        raise ArtifactError(f"the bundle's {MANIFEST} is over {limits.max_manifest_bytes >> 10} KB; pack the artifact again")
    manifest = parse_manifest(manifest_bytes, f"the bundle's {MANIFEST}")
    if backends is not None and manifest["backend"] not in backends:
        raise ArtifactError(f"bundle holds a {manifest['backend']!r} artifact; accepted here: {', '.join(backends)} "
                            "(non-executable model formats only)")
    found = {name: members.pop(name) for name in extras if name in members}
    listed = manifest["files"]
    for name in listed:
        check_name(name, f"the bundle's {MANIFEST} lists a file")
    unlisted, missing = sorted(set(members) - set(listed)), sorted(set(listed) - set(members))
    if unlisted:
        raise ArtifactError(f"bundle member {unlisted[0]} is not listed in its manifest; pack the artifact again")
    if missing:
        raise ArtifactError(f"bundle lacks {missing[0]}, which its manifest lists; pack the artifact again")
    for name, content in members.items():
        record = listed[name]  # parse_manifest checked its form: a sha256 and a byte count
        if len(content) != record["bytes"] or hashlib.sha256(content).hexdigest() != record["sha256"]:
            raise ArtifactError(f"bundle member {name} does not match the sha256 and size in its manifest (altered "
                                "or truncated); pack the artifact again")
    return Bundle(manifest, manifest_bytes, members, found)


def _members(data: bytes, limits: BundleLimits) -> dict[str, bytes]:
    """Every member's bytes by name, checked one by one as the tar is read."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as exc:
        raise ArtifactError(f"this is not an uncompressed tar bundle ({exc}); pack the artifact with "
                            "`edgeopt pack` or edgeopt.core.bundle.pack") from None
    members: dict[str, bytes] = {}
    total = 0
    with tar:
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as exc:
                raise ArtifactError(f"the bundle is corrupt after {len(members)} members ({exc})") from None
            if member is None:
                return members
            check_name(member.name, "bundle")
            if not member.isreg():
                raise ArtifactError(f"bundle member {member.name} is a link, device or folder; bundles hold "
                                    "regular files only")
            if member.name in members:
                raise ArtifactError(f"bundle member {member.name} appears twice")
            if len(members) >= limits.max_members:
                raise ArtifactError(f"bundle has more than {limits.max_members} members")
            total += member.size
            if total > limits.max_bytes:
                raise ArtifactError(f"bundle members add up to more than the {limits.max_bytes / 2**20:.0f} MB cap")
            try:
                content = tar.extractfile(member).read()
            except (tarfile.TarError, OSError, EOFError):  # tarfile's "unexpected end of data"
                raise ArtifactError(f"bundle member {member.name} is truncated: the bundle ends inside it; copy it "
                                    "again, or pack the artifact again") from None
            if len(content) != member.size:
                raise ArtifactError(f"bundle member {member.name} is truncated ({len(content)} of {member.size} bytes)")
            try:
                kind = executable_format(content[:HEAD], len(content))
            except ModelSourceError as exc:
                raise ArtifactError(f"bundle member {member.name}: {exc}") from None
            if kind:
                raise ArtifactError(f"bundle member {member.name} is {kind}: executable formats are never "
                                    "accepted; export to ONNX, OpenVINO IR or ExecuTorch instead")
            members[member.name] = content
