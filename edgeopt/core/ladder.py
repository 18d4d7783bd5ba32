"""Ladder: one folder holding several artifacts of one model, from the most accurate to the fastest.

A server or a stream given a ladder answers with the most accurate rung that still meets its
latency target, and steps down to faster rungs as load rises (``edgeopt.runtime.controller``).
Every rung takes the same input (shape, dtype, preprocessing), belongs to the same task and
names the same labels, so any rung can answer any request. Each rung carries what it was
measured at: its quality (``{metric: value}`` on the user's data) and its latency per batch
size (p50/p99 in ms), which seed the controller's predictions.

Layout::

    LADDER/ladder.json        the record: rungs in order, their quality, latency, manifest sha256
    LADDER/r0/manifest.json   rung 0, the most accurate (an ordinary artifact folder)
    LADDER/r1/...

The record is written last and the folder renamed into place (``StagedFolder``), so an
interrupted write never looks finished. Opening checks the record field by field, each rung's
manifest against the sha256 the record holds (a rung swapped for another is refused) and, with
``verify``, every file of every rung.

Example:
    >>> ladder = Ladder.open("out/neu-ladder")                     # doctest: +SKIP
    >>> [(r.name, r.latency_ms[1]["p50"]) for r in ladder.rungs]   # doctest: +SKIP
    [('r0', 1.21), ('r1', 0.33), ('r2', 0.14)]
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgeopt.core.artifact import Artifact, StagedFolder, write_json_atomic
from edgeopt.core.errors import ArtifactError, ConfigError
from edgeopt.core.members import (SHA256, copy_member, finite_number, latency_problem, manifest_sha256, open_member,
                                  open_record, read_record)

LADDER_FILE = "ladder.json"
FORMAT = "edgeopt-ladder"
SCHEMA = 1
MAX_RUNGS = 8
RUNG_NAME = re.compile(r"^r[0-9]$")


@dataclass(frozen=True)
class Rung:
    """One artifact of a ladder and what it was measured at."""

    name: str
    artifact: Artifact = field(repr=False)
    quality: dict[str, float]  # {metric: value} on the user's data; empty when not measured
    latency_ms: dict[int, dict[str, float]]  # batch size -> {"p50": ms, "p99": ms}, per batch

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "quality": self.quality,
                "latency_ms": {str(b): v for b, v in sorted(self.latency_ms.items())},
                "manifest_sha256": manifest_sha256(self.artifact),
                "backend": self.artifact.backend, "precision": self.artifact.precision}


@dataclass(frozen=True)
class Ladder:
    """A verified ladder folder: its rungs, most accurate first."""

    path: Path
    rungs: tuple[Rung, ...]
    record: dict[str, Any] = field(repr=False)

    @property
    def input_spec(self):
        return self.rungs[0].artifact.input_spec

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Ladder":
        folder, record = open_record(path, LADDER_FILE, "it is not an edgeopt ladder; make one with "
                                                        "`edgeopt ladder OUT ARTIFACT...`", parse_record)
        rungs = []
        for entry in record["rungs"]:
            artifact = open_member(folder, entry["name"], entry["manifest_sha256"], "ladder", verify)
            rungs.append(Rung(entry["name"], artifact, dict(entry["quality"]),
                              {int(b): dict(v) for b, v in entry["latency_ms"].items()}))
        check_interchangeable([r.artifact for r in rungs], str(folder))
        return cls(folder, tuple(rungs), record)


def is_ladder(path: str | os.PathLike) -> bool:
    return (Path(path) / LADDER_FILE).is_file()


def check_interchangeable(artifacts: Sequence[Artifact], where: str) -> None:
    """Raise ConfigError unless every artifact can answer every request the first one can: the same input
    (sample shape, dtype, name, preprocessing), task, labels and number of outputs."""
    first = artifacts[0]
    spec = first.input_spec
    for other in artifacts[1:]:
        theirs = other.input_spec
        differences = [what for what, same in (
            ("input shape", theirs.sample_shape == spec.sample_shape), ("input dtype", theirs.dtype == spec.dtype),
            ("input name", theirs.name == spec.name), ("preprocessing", theirs.preprocess == spec.preprocess),
            ("task", other.manifest.get("task") == first.manifest.get("task")),
            ("labels", other.manifest.get("labels") == first.manifest.get("labels")),
            # count and rank: a detector's box count varies from run to run, so its recorded shapes can differ
            ("outputs", [len(o.shape) for o in other.outputs] == [len(o.shape) for o in first.outputs]))
                                  if not same]
        if differences:
            raise ConfigError(f"{where}: {other.path} differs from {first.path} in its {', '.join(differences)}; "
                              "every rung of a ladder must take the same input and give the same kind of answer")


def parse_record(text: bytes, where: str) -> dict[str, Any]:
    """A ladder record's JSON, checked field by field (it comes from a file: a stranger's data)."""
    record = read_record(text, where, FORMAT, SCHEMA, "write the ladder again")
    rungs = record.get("rungs")
    if not isinstance(rungs, list) or not 1 <= len(rungs) <= MAX_RUNGS:
        raise ArtifactError(f"{where} must list 1 to {MAX_RUNGS} rungs; write the ladder again")
    names = set()
    for index, rung in enumerate(rungs):
        problem = _rung_problem(rung, index)
        if problem is None and rung["name"] in names:
            problem = f"rung {rung['name']} is listed twice"
        if problem is not None:
            raise ArtifactError(f"{where}: {problem}; write the ladder again")
        names.add(rung["name"])
    return record


def _rung_problem(rung: object, index: int) -> str | None:
    """What is wrong with one rung's record, or None."""
    if not isinstance(rung, dict):
        return f"rung {index} is not an object"
    name = rung.get("name")
    if not isinstance(name, str) or not RUNG_NAME.match(name):
        return f"rung {index} has the name {name!r}; rung names are r0 to r{MAX_RUNGS - 1} (folders inside the ladder)"
    digest = rung.get("manifest_sha256")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        return f"rung {name} lacks its manifest's sha256"
    quality = rung.get("quality")
    if not isinstance(quality, dict) or not all(isinstance(k, str) and finite_number(v) for k, v in quality.items()):
        return f"rung {name}: quality must map metric names to numbers"
    return latency_problem(rung.get("latency_ms"), f"rung {name}")


def write_ladder(out: str | os.PathLike, rungs: Sequence[tuple[Artifact, dict[str, float], dict[int, dict[str, float]]]],
                 *, measured_on: dict[str, Any] | None = None, overwrite: bool = False) -> Ladder:
    """Copy ``rungs`` — (artifact, quality, latency per batch), most accurate first — into a new ladder at ``out``."""
    if not 1 <= len(rungs) <= MAX_RUNGS:
        raise ConfigError(f"a ladder holds 1 to {MAX_RUNGS} rungs, not {len(rungs)}")
    check_interchangeable([artifact for artifact, _, _ in rungs], "the ladder")
    with StagedFolder(out, overwrite=overwrite) as staged:
        written = []
        for index, (artifact, quality, latency) in enumerate(rungs):
            written.append(Rung(f"r{index}", copy_member(artifact, staged.dir, f"r{index}"), dict(quality),
                                dict(latency)))
        record = {"format": FORMAT, "schema": SCHEMA, "task": rungs[0][0].manifest.get("task"),
                  "rungs": [r.to_record() for r in written], "measured_on": measured_on or {},
                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write_json_atomic(staged.dir / LADDER_FILE, record)
        staged.move_into_place()
    return Ladder.open(out, verify=False)
