"""The search's records: a Candidate (a recipe, built, measured and judged), a Probe (the
latency of a candidate's untrained architecture) and a ModelScore (a fine-tuned PyTorch
model's quality before export). The journal stores them as JSON lines; ``results.json``
lists the candidates.

Example:
    >>> c = Candidate(key="abc", label="onnxruntime fp32", stage=1, status="failed", recipe={}, reason="parity")
    >>> Candidate.from_dict(c.to_dict()) == c
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from edgeopt.measure.measurement import Measurement
from edgeopt.search.goals import Violation


def _from_dict(cls, data: dict[str, Any], **converted: Any):
    known = {f.name for f in fields(cls)}
    return cls(**{**{k: v for k, v in data.items() if k in known}, **converted})


@dataclass
class Candidate:
    """One recipe of the search. ``status``: ok (measured and judged), failed (with the
    reason: the build or the parity check refused it), skipped (not worth building),
    unmeasured (the device's agent did not answer) or stopped (the budget ran out while it
    was being built; not a failure: ``--resume`` with budget left builds it again, a
    fine-tune continuing from its last epoch). ``finished_at_s``: the search time used
    (the budget's clock, across resumes) when it was journaled."""

    key: str
    label: str
    stage: int
    status: str
    recipe: dict[str, Any]
    reason: str | None = None
    measurement: Measurement | None = None
    metric: str | None = None  # the goal's metric (its name in the measurement) and its title
    metric_title: str | None = None
    drop_points: float | None = None  # of the goal's metric against the baseline
    violations: list[Violation] = field(default_factory=list)
    shortfall: float = 0.0
    artifact: str | None = None  # relative to the search folder
    log: str | None = None  # the build's log (native runtime output), relative to the search folder
    notes: list[str] = field(default_factory=list)
    predicted_ms: float | None = None
    elapsed_s: float = 0.0
    finished_at_s: float | None = None
    built_on: str | None = None  # the cluster node that built it (None: the search's own machine)
    kind: ClassVar[str] = "candidate"

    RETRIED: ClassVar[tuple[str, ...]] = ("unmeasured", "stopped")  # built again on --resume

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def meets_goals(self) -> bool:
        return self.ok and not self.violations

    @property
    def latency_ms(self) -> float:
        return self.measurement.latency_ms

    @property
    def value(self) -> float:
        """The goal's metric, as measured on the test split."""
        return self.measurement.metric(self.metric)

    @property
    def export(self) -> dict[str, Any]:
        return self.recipe.get("export", {})

    @property
    def backend(self) -> str:
        return self.export.get("backend", "")

    @property
    def precision(self) -> str:
        return self.export.get("precision", "")

    @property
    def quantization(self) -> str:
        """'none' at FP32, else the quantization mode (static, aware, qat)."""
        return (self.export.get("quantization") or {}).get("mode", "none")

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.recipe.get("steps", [])

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, **asdict(self)}
        data["measurement"] = self.measurement.to_dict() if self.measurement else None
        data["violations"] = [v.to_dict() for v in self.violations]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Candidate":
        measurement = data.get("measurement")
        return _from_dict(cls, data, measurement=Measurement.from_dict(measurement) if measurement else None,
                          violations=[Violation.from_dict(v) for v in data.get("violations", [])])


@dataclass
class Probe:
    """Latency, size and memory of an untrained architecture (``key``: probe:<recipe hash>);
    ``predicted_from`` says when they were scaled from another measurement instead."""

    key: str
    status: str
    measurement: Measurement | None = None
    reason: str | None = None
    predicted_from: str | None = None
    elapsed_s: float = 0.0
    finished_at_s: float | None = None  # the search's clock when journaled, as a Candidate's
    kind: ClassVar[str] = "probe"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self), "measurement": self.measurement.to_dict() if self.measurement else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Probe":
        measurement = data.get("measurement")
        return _from_dict(cls, data, measurement=Measurement.from_dict(measurement) if measurement else None)


@dataclass
class ModelScore:
    """The quality of a built PyTorch model (eager FP32) on the test split (``key``: fp32:<model hash>)."""

    key: str
    metrics: dict[str, float]
    drop_points: float
    elapsed_s: float = 0.0
    finished_at_s: float | None = None  # the search's clock when journaled, as a Candidate's
    kind: ClassVar[str] = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelScore":
        return _from_dict(cls, data)


RECORDS = {cls.kind: cls for cls in (Candidate, Probe, ModelScore)}
Record = Candidate | Probe | ModelScore
