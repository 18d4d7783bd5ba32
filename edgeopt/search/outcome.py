"""What a search found: its records, the choice, the Pareto front, and the context a report needs.

``edgeopt.report.search`` words it; ``to_dict`` is ``results.json`` (versioned by ``SCHEMA``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeopt.search.candidate import Candidate

if TYPE_CHECKING:
    from edgeopt.search.loop import SearchConfig


@dataclass
class SearchOutcome:
    """Everything the report shows: records, baseline, choice, front, context."""

    config: SearchConfig
    baseline: dict[str, Any]
    records: list[Candidate]
    chosen: Candidate | None
    front: list[Candidate]
    closest: list[Candidate]
    device: dict[str, Any]
    environment: dict[str, Any]
    elapsed_s: float
    not_tried: list[dict[str, Any]]
    winner_details: dict[str, Any] = field(default_factory=dict)
    # goals bounding a microcontroller: the smallest arena and flash any build or probe reached (KB), and whether any fits
    smallest_footprint: dict[str, Any] | None = None

    SCHEMA = 2

    @property
    def estimated(self) -> bool:
        return self.config.device != "host" and self.config.agent is None

    @property
    def measured_on(self) -> str | None:
        """The device whose agent timed the candidates, or None (timed here, or estimated)."""
        return self.device.get("measured_on")

    def eager_baseline(self) -> Candidate | None:
        """The baseline's eager FP32 candidate, when it was measured (the speed-up reference)."""
        return next((r for r in self.records if r.ok and r.backend == "eager" and r.precision == "fp32"
                     and not r.steps), None)

    def ladder_candidates(self) -> list[Candidate]:
        """The rungs a ladder may take: the choice, then the Pareto front's faster candidates, most accurate
        first (every one with its artifact; ``pipeline.ladder`` keeps those that are a real speed step and take
        the choice's input)."""
        if self.chosen is None or not self.chosen.artifact:
            return []
        faster = [c for c in self.front if c is not self.chosen and c.ok and c.artifact
                  and c.latency_ms < self.chosen.latency_ms]
        # points lost on the goal's metric: the order the goal reads (whichever way the metric is better)
        return [self.chosen, *sorted(faster, key=lambda c: (c.drop_points or 0.0, c.latency_ms))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.SCHEMA, "model": self.config.model, "data": self.config.data,
            "goals": self.config.goals.to_dict(), "device": self.device, "estimated": self.estimated,
            "budget_s": self.config.budget_s, "elapsed_s": self.elapsed_s, "baseline": self.baseline,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "pareto_front": [r.key for r in self.front], "closest": [r.key for r in self.closest],
            "candidates": [r.to_dict() for r in self.records], "not_tried": self.not_tried,
            "winner": self.winner_details, "space": self.config.space.to_dict(), "environment": self.environment,
            "smallest_footprint": self.smallest_footprint,
        }
