"""Accuracy-aware INT8 by layer sensitivity: keep the most sensitive layers in FP32.

Runtime-independent: a backend supplies ``build(excluded_layers) -> candidate`` and
``score(candidate) -> the task's main metric`` (higher is better), and a Validation says
what drop is allowed. The search quantizes everything; if the drop exceeds the
allowance, it ranks layers by how much of the metric comes back when each alone stays
FP32, then reverts them in that order until the drop holds. If it never holds, the
result says so and carries the best candidate found.

Example:
    >>> result = revert_by_sensitivity(layers, build, score, fp32_score=0.95, validation=v)  # doctest: +SKIP
    >>> result.reached, result.excluded                                                  # doctest: +SKIP
    (True, ['conv1'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from edgeopt.quantization import Validation


@dataclass
class SensitivityResult:
    candidate: Any
    score: float
    excluded: list[str]
    reached: bool
    ranking: list[dict[str, float | str]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)


def revert_by_sensitivity(
    layers: Sequence[str],
    build: Callable[[list[str]], Any],
    score: Callable[[Any], float],
    fp32_score: float,
    validation: Validation,
) -> SensitivityResult:
    """Quantize all ``layers``; revert the most sensitive to FP32 until the validation's drop holds."""

    def holds(value: float) -> bool:
        return validation.holds(fp32_score, value)

    full = build([])
    full_score = score(full)
    best = SensitivityResult(full, full_score, [], holds(full_score))
    best.steps.append({"excluded": [], "score": full_score})
    if best.reached:
        return best
    gains = sorted(((layer, score(build([layer])) - full_score) for layer in layers),
                   key=lambda item: -item[1])  # stable: ties keep graph order
    best.ranking = [{"layer": layer, "score_gain": gain} for layer, gain in gains]
    excluded: list[str] = []
    for layer, _ in gains:
        excluded = [*excluded, layer]
        candidate = build(excluded)
        value = score(candidate)
        best.steps.append({"excluded": excluded, "score": value})
        if value > best.score or holds(value):
            best.candidate, best.score, best.excluded = candidate, value, excluded
        if holds(value):
            best.reached = True
            break
    return best
