"""Folders of artifacts bound together by a record: a ladder's rungs, an early-exit model's stages.

Each member is an ordinary artifact folder inside the owner's folder, named by the record, and the
record holds the sha256 of the member's manifest: a member swapped for another artifact (its files
each match its own manifest, so the artifact alone looks fine) is refused. The record is written
last and the folder renamed into place (``StagedFolder``), so an interrupted write never looks
finished.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from edgeopt.core.artifact import MANIFEST, Artifact, sha256_of
from edgeopt.core.errors import ArtifactError

SHA256 = re.compile(r"[0-9a-f]{64}")
BATCH = re.compile(r"[1-9][0-9]{0,3}")  # ASCII digits, no leading zero: "01" and "1" are not two sizes


def open_member(folder: Path, name: str, manifest_sha256: str, what: str, verify: bool = True) -> Artifact:
    """The member artifact ``folder/name``, refused unless its manifest is the one the record names."""
    member = folder / name
    if member.is_symlink() or (member.exists() and member.resolve().parent != folder.resolve()):
        raise ArtifactError(f"{what} {folder}: {name} is a link to somewhere else; a {what}'s members are folders "
                            "inside it: refusing it")
    if not (member / MANIFEST).is_file():
        raise ArtifactError(f"{what} {folder}: {name} has no {MANIFEST}; write the {what} again")
    if sha256_of(member / MANIFEST) != manifest_sha256:
        raise ArtifactError(f"{what} {folder}: {name} is not the artifact the {what} was written with (its manifest's "
                            f"sha256 differs); write the {what} again")
    return Artifact.open(member, verify=verify)


def copy_member(artifact: Artifact, staged: Path, name: str) -> Artifact:
    """``artifact`` copied into the staged folder as the member ``name``."""
    shutil.copytree(artifact.path, staged / name)
    return Artifact.open(staged / name)


def manifest_sha256(artifact: Artifact) -> str:
    return sha256_of(artifact.path / MANIFEST)


def read_record(text: bytes, where: str, format: str, schema: int, again: str) -> dict[str, Any]:
    """A record's JSON object, refused unless it is valid JSON of ``format`` at a schema up to ``schema``
    (``again``: what to do, e.g. "write the ladder again")."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, a number of thousands of digits
        raise ArtifactError(f"{where} is not valid JSON ({type(exc).__name__}); {again}") from None
    if not isinstance(record, dict) or record.get("format") != format:
        raise ArtifactError(f"{where} is not an edgeopt record of format {format!r}; {again}")
    found = record.get("schema")
    if not isinstance(found, int) or isinstance(found, bool) or not 1 <= found <= schema:
        raise ArtifactError(f"{where} has schema {found!r}; this edgeopt reads {format} schema {schema}: upgrade it")
    return record


def open_record(path, name: str, missing: str, parse) -> tuple[Path, dict[str, Any]]:
    """(the folder, its record ``name`` read by ``parse``); ``missing`` says what the folder is not, and what to do."""
    folder = Path(path)
    if not (folder / name).is_file():
        raise ArtifactError(f"{folder} has no {name}: {missing}")
    return folder, parse((folder / name).read_bytes(), str(folder / name))


def finite_number(value: object) -> bool:
    """Whether ``value`` (from JSON) is an ordinary finite number (not a bool, not an integer past a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def latency_problem(latency: object, who: str) -> str | None:
    """What is wrong with a recorded latency table ({"batch": {"p50": ms, "p99": ms}}) of ``who``, or None."""
    if not isinstance(latency, dict) or not latency:
        return f"{who} has no latency per batch size"
    for batch, stats in latency.items():
        if not (isinstance(batch, str) and BATCH.fullmatch(batch) and int(batch) <= 4096):
            return f"{who}: latency batch size {batch!r} is not a whole number from 1 to 4096"
        if not isinstance(stats, dict) or not all(finite_number(stats.get(k)) and stats[k] > 0 for k in ("p50", "p99")):
            return f"{who}: latency at batch {batch} needs positive p50 and p99 in ms"
    return None
