"""Staged early-exit model: a classifier compiled stage by stage, with the confidence thresholds to leave early.

Stage ``s0`` takes the image and gives (features, exit 0's logits); stage ``sk`` takes the features of
the stage before it and gives its own (features, logits); the last stage gives the original model's
logits. A runtime (``edgeopt.runtime.exits``) runs a stage, and stops when the top softmax
probability of its exit reaches that exit's threshold — so computation really stops at the exit.
Each **setting** is one set of thresholds, calibrated on validation data for an accuracy budget,
from "accuracy first" (never leave early: the original model's answers) to "fastest"; the record
keeps each setting's validation accuracy, mean MACs per image and latency per batch size, in that
order (a server or a stream takes the first as the most accurate).

Layout::

    MODEL/exits.json    the record: stages, MACs per exit, settings
    MODEL/s0/ ... sK/   the stages (ordinary artifact folders, bound by their manifest's sha256)

Example:
    >>> staged = StagedExits.open("out/neu-exits")                       # doctest: +SKIP
    >>> [(s.name, s.thresholds) for s in staged.settings][:2]             # doctest: +SKIP
    [('accuracy-first', (1.01, 1.01, 1.01)), ('max-drop-0.5', (0.95, 0.97, 0.9))]
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeopt.core.artifact import Artifact, StagedFolder, write_json_atomic
from edgeopt.core.errors import ArtifactError, ConfigError
from edgeopt.core.members import (SHA256, copy_member, finite_number, latency_problem, manifest_sha256, open_member,
                                  open_record, read_record)

EXITS_FILE = "exits.json"
FORMAT = "edgeopt-exits"
SCHEMA = 1
MAX_STAGES = 8
MAX_SETTINGS = 16  # each is a rung a server plans with before every batch, and a metric series
SETTING_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STAGE_NAME = re.compile(r"^s[0-9]$")
NEVER = 1.01  # a threshold no softmax probability reaches: that exit is never taken


@dataclass(frozen=True)
class Setting:
    """Thresholds (one per early exit) and what they gave on validation."""

    name: str
    thresholds: tuple[float, ...]
    validation: dict[str, float] = field(default_factory=dict)  # e.g. {"top1": 0.99, "mean_macs_share": 0.44}
    # batch size -> {"p50": ms, "p99": ms} per batch, timed on validation images (how many leave early depends on
    # the images): what a server's or a stream's controller plans with, as a ladder rung's latency
    latency_ms: dict[int, dict[str, float]] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        latency = {"latency_ms": {str(b): v for b, v in sorted(self.latency_ms.items())}} if self.latency_ms else {}
        return {"name": self.name, "thresholds": list(self.thresholds), "validation": self.validation, **latency}


@dataclass(frozen=True)
class StagedExits:
    path: Path
    stages: tuple[Artifact, ...]
    exit_macs: tuple[int, ...]  # MACs spent when leaving at each exit, the final one last
    settings: tuple[Setting, ...]
    record: dict[str, Any] = field(repr=False)

    @property
    def input_spec(self):
        return self.stages[0].input_spec

    @property
    def task(self) -> str:
        return self.record.get("task") or "classification"

    @property
    def labels(self) -> list[str] | None:
        return self.record.get("labels") or None

    @property
    def timed(self) -> bool:
        """Whether every setting carries its latency per batch size (what serving it under a target needs)."""
        return all(setting.latency_ms for setting in self.settings)

    def setting(self, name: str) -> Setting:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise ConfigError(f"{self.path} has no setting {name!r}; it has {', '.join(s.name for s in self.settings)}")

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "StagedExits":
        folder, record = open_record(path, EXITS_FILE, "it is not an early-exit model; make one with "
                                                       "`edgeopt exits MODEL --data DATA --out OUT`", parse_record)
        stages = tuple(open_member(folder, s["name"], s["manifest_sha256"], "early-exit model", verify)
                       for s in record["stages"])
        settings = tuple(Setting(s["name"], tuple(float(t) for t in s["thresholds"]), dict(s.get("validation", {})),
                                 {int(b): dict(v) for b, v in s.get("latency_ms", {}).items()})
                         for s in record["settings"])
        check_chain(stages, str(folder))
        return cls(folder, stages, tuple(int(m) for m in record["exit_macs"]), settings, record)


def confidence(logits: np.ndarray) -> np.ndarray:
    """What a threshold is compared with: the top softmax probability of each row."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    return (probabilities / probabilities.sum(axis=1, keepdims=True)).max(axis=1)


def check_chain(stages: Sequence[Artifact], where: str) -> None:
    """Raise ArtifactError unless each stage gives (features, logits), the last logits alone, and each stage takes
    the features of the one before it."""
    for index, stage in enumerate(stages):
        last = index == len(stages) - 1
        if len(stage.outputs) != (1 if last else 2):
            raise ArtifactError(f"{where}: stage s{index} gives {len(stage.outputs)} outputs, not "
                                f"{'the logits' if last else 'features and logits'}; build the model again")
        if index and tuple(stage.input_spec.sample_shape) != tuple(stages[index - 1].outputs[0].shape[1:]):
            raise ArtifactError(f"{where}: stage s{index} does not take what s{index - 1} gives; build the model again")
        if last and len(stage.outputs[0].shape) != 2:
            raise ArtifactError(f"{where}: the last stage must give one row of logits per image; build the model again")
        if not stage.input_spec.dynamic_batch:  # the rows still going on shrink from stage to stage
            raise ArtifactError(f"{where}: stage s{index} takes one batch size only; build the model again")


def is_staged_exits(path: str | os.PathLike) -> bool:
    return (Path(path) / EXITS_FILE).is_file()


def parse_record(text: bytes, where: str) -> dict[str, Any]:
    """An early-exit record's JSON, checked field by field (it comes from a file: a stranger's data)."""
    record = read_record(text, where, FORMAT, SCHEMA, "build the model again")
    stages = record.get("stages")
    if not isinstance(stages, list) or not 2 <= len(stages) <= MAX_STAGES:
        raise ArtifactError(f"{where} must list 2 to {MAX_STAGES} stages; build the model again")
    for index, stage in enumerate(stages):
        if not (isinstance(stage, dict) and stage.get("name") == f"s{index}" and isinstance(stage.get("manifest_sha256"), str)
                and SHA256.fullmatch(stage["manifest_sha256"])):
            raise ArtifactError(f"{where}: stage {index} must be named s{index} and carry its manifest's sha256")
    macs = record.get("exit_macs")
    if not (isinstance(macs, list) and len(macs) == len(stages)
            and all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in macs)):
        raise ArtifactError(f"{where}: exit_macs must hold one whole number per stage")
    settings = record.get("settings")
    if not isinstance(settings, list) or not 1 <= len(settings) <= MAX_SETTINGS:
        raise ArtifactError(f"{where} must list 1 to {MAX_SETTINGS} threshold settings; build the model again")
    names = set()
    for setting in settings:
        thresholds = setting.get("thresholds") if isinstance(setting, dict) else None
        validation = setting.get("validation", {}) if isinstance(setting, dict) else None
        if not (isinstance(setting, dict) and isinstance(setting.get("name"), str)
                and SETTING_NAME.match(setting["name"]) and setting["name"] not in names
                and isinstance(thresholds, list) and len(thresholds) == len(stages) - 1
                and all(finite_number(t) and 0 <= t <= NEVER for t in thresholds)
                and isinstance(validation, dict) and all(isinstance(k, str) and finite_number(v)
                                                         for k, v in validation.items())):
            raise ArtifactError(f"{where}: each setting needs a name of its own (letters, digits, '_', '.', '-'), one "
                                f"threshold in [0, {NEVER}] per early exit and numbers for its validation figures")
        problem = latency_problem(setting["latency_ms"], f"setting {setting['name']}") if "latency_ms" in setting else None
        if problem is not None:
            raise ArtifactError(f"{where}: {problem}; build the model again")
        names.add(setting["name"])
    timed = {tuple(sorted(s["latency_ms"])) if "latency_ms" in s else None for s in settings}
    if len(timed) > 1:  # a controller compares the settings batch size by batch size
        raise ArtifactError(f"{where}: every setting must be timed at the same batch sizes, or none; build the model "
                            "again")
    labels = record.get("labels")
    if not isinstance(record.get("task", ""), str) or not (
            labels is None or (isinstance(labels, list) and all(isinstance(label, str) for label in labels))):
        raise ArtifactError(f"{where}: task must be a name and labels a list of names")
    return record


def write_staged_exits(out: str | os.PathLike, stages: Sequence[Artifact], exit_macs: Sequence[int],
                       settings: Sequence[Setting], *, task: str, labels: list[str] | None,
                       details: dict[str, Any] | None = None, overwrite: bool = False) -> StagedExits:
    """Copy ``stages`` into a new early-exit model at ``out`` with its record."""
    with StagedFolder(out, overwrite=overwrite) as staged:
        written = [copy_member(stage, staged.dir, f"s{i}") for i, stage in enumerate(stages)]
        record = {"format": FORMAT, "schema": SCHEMA, "task": task, "labels": labels,
                  "stages": [{"name": f"s{i}", "manifest_sha256": manifest_sha256(a)} for i, a in enumerate(written)],
                  "exit_macs": [int(m) for m in exit_macs], "settings": [s.to_record() for s in settings],
                  **(details or {}), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        parse_record(json.dumps(record).encode(), "the record")  # what is written must read back
        write_json_atomic(staged.dir / EXITS_FILE, record)
        staged.move_into_place()
    return StagedExits.open(out, verify=False)
