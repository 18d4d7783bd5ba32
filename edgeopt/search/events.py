"""What a running search reports: typed events, worded for people by ``edgeopt.report.progress``.

The search loop never words console text; it hands these to the ``on_event`` callback,
and the CLI (or a notebook, or a test) decides how to show them.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.search.candidate import Candidate


@dataclass(frozen=True)
class StageStarted:
    stage: int
    candidates: int
    priority: str


@dataclass(frozen=True)
class CandidateStarted:
    label: str
    used_s: float
    budget_s: float


@dataclass(frozen=True)
class CandidateProgress:
    """How far the candidate being built is: its current ``step`` (training, calibration, accuracy-aware
    INT8 evaluations...), ``done`` of ``total`` where the step counts (None where it does not), and the
    search's clock. Sent at every point where the work could stop for the budget: often, so a listener
    that prints lines should thin them out."""

    label: str
    step: str
    done: int | None
    total: int | None
    used_s: float
    budget_s: float


@dataclass(frozen=True)
class CandidateFinished:
    """Measured (status ok), refused (failed), or stopped by the budget (stopped)."""

    candidate: Candidate


@dataclass(frozen=True)
class FromJournal:
    candidate: Candidate


@dataclass(frozen=True)
class Skipped:
    """Judged not worth building (the reason is in the journal too)."""

    label: str
    reason: str


@dataclass(frozen=True)
class NotTried:
    """Left out for lack of budget, or because the backend does not run here or on the device."""

    label: str
    reason: str


@dataclass(frozen=True)
class TrainingPlanned:
    """A stage-2 candidate passed its probe: ``predicted_ms`` (None when the probe failed) and the
    fine-tuning time expected (0 when its model is already built)."""

    label: str
    predicted_ms: float | None
    estimated: bool
    training_s: float
    probe_failure: str | None = None


@dataclass(frozen=True)
class TrainingEpoch:
    label: str
    epoch: int
    epochs: int
    loss: float
    val: float


@dataclass(frozen=True)
class RunoffStarted:
    """The candidates too close to the fastest for one timing each to rank, about to be timed ``rounds``
    more times side by side."""

    labels: tuple[str, ...]
    rounds: int


@dataclass(frozen=True)
class RunoffFinished:
    """Each re-timed candidate's (label, latency before, latency now: the median of its timings)."""

    results: tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class BestChanged:
    candidate: Candidate


Event = (StageStarted | CandidateStarted | CandidateProgress | CandidateFinished | FromJournal | Skipped | NotTried
         | TrainingPlanned | TrainingEpoch | RunoffStarted | RunoffFinished | BestChanged)
