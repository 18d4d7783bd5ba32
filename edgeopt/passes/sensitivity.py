"""Accuracy-aware INT8 by layer sensitivity: keep the most sensitive layers in FP32.

Runtime-independent: a backend supplies ``build(excluded_layers) -> candidate`` and
``accuracy(candidate) -> top-1``. The search quantizes everything; if the accuracy drop
exceeds ``max_drop``, it ranks layers by how much accuracy comes back when each alone
stays FP32, then reverts them in that order until the drop holds. If it never holds,
the result says so and carries the most accurate candidate found.

Example:
    >>> result = revert_by_sensitivity(layers, build, accuracy, fp32_accuracy=0.95, max_drop=1.0)  # doctest: +SKIP
    >>> result.reached, result.excluded                                                           # doctest: +SKIP
    (True, ['conv1'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class SensitivityResult:
    candidate: Any
    accuracy: float
    excluded: list[str]
    reached: bool
    ranking: list[dict[str, float | str]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)


def revert_by_sensitivity(
    layers: Sequence[str],
    build: Callable[[list[str]], Any],
    accuracy: Callable[[Any], float],
    fp32_accuracy: float,
    max_drop: float,
) -> SensitivityResult:
    """Quantize all ``layers``; revert the most sensitive to FP32 until the drop (points) holds."""

    def holds(value: float) -> bool:
        return 100.0 * (fp32_accuracy - value) <= max_drop + 1e-9

    full = build([])
    full_accuracy = accuracy(full)
    best = SensitivityResult(full, full_accuracy, [], holds(full_accuracy))
    best.steps.append({"excluded": [], "accuracy": full_accuracy})
    if best.reached:
        return best
    gains = [(layer, accuracy(build([layer])) - full_accuracy) for layer in layers]
    ranking = [layer for layer, _ in sorted(gains, key=lambda item: -item[1])]  # stable: ties keep graph order
    best.ranking = [{"layer": layer, "accuracy_gain": gain} for layer, gain in sorted(gains, key=lambda i: -i[1])]
    excluded: list[str] = []
    for layer in ranking:
        excluded = [*excluded, layer]
        candidate = build(excluded)
        value = accuracy(candidate)
        best.steps.append({"excluded": excluded, "accuracy": value})
        if value > best.accuracy or holds(value):
            best.candidate, best.accuracy, best.excluded = candidate, value, excluded
        if holds(value):
            best.reached = True
            break
    return best
