"""Accuracy-aware INT8 by layer sensitivity: keep the fewest most-sensitive layers in FP32.

Runtime-independent. The backend ranks its quantized layers once, most sensitive first,
by a cheap proxy measured in one pass (ONNX Runtime: the quantization noise each node
adds, see ``onnxruntime.rank_nodes``), and supplies ``build(kept_in_float) -> candidate``
and ``score(candidate) -> the task's main metric`` (higher is better). Full evaluations
are spent only on *how many* of the ranked layers to keep in float: a bisection over k,
assuming that keeping more of the ranking never hurts much. With n layers that is at most
``2 + ceil(log2 n)`` evaluations — 10 for 212 nodes, where ranking each node by its own
full evaluation cost 212 and a walk down the ranking up to 212 more.

If even every ranked layer in float misses the drop, the result says so and carries the
best candidate evaluated. The deadline is checked before every evaluation.

Example:
    >>> result = keep_in_float(ranked, build, score, fp32_score=0.95, validation=v)   # doctest: +SKIP
    >>> result.reached, result.excluded                                                # doctest: +SKIP
    (True, ['conv1'])
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.quantization import Validation

STEP = "accuracy-aware INT8 evaluations"


@dataclass
class SensitivityResult:
    candidate: Any
    score: float
    excluded: list[str]
    reached: bool
    steps: list[dict[str, Any]] = field(default_factory=list)  # every full evaluation: k, its score, its seconds

    @property
    def evaluations(self) -> int:
        return len(self.steps)


def max_evaluations(layers: int) -> int:
    """The most full evaluations ``keep_in_float`` spends on ``layers`` ranked layers."""
    return 2 + math.ceil(math.log2(layers)) if layers > 1 else 1 + layers


def keep_in_float(
    ranked: Sequence[str],
    build: Callable[[list[str]], Any],
    score: Callable[[Any], float],
    fp32_score: float,
    validation: Validation,
    deadline: Deadline = NO_DEADLINE,
) -> SensitivityResult:
    """The smallest k for which ``ranked[:k]`` in float holds the validation's drop (k = 0: all INT8)."""
    limit = max_evaluations(len(ranked))
    result: SensitivityResult | None = None

    def evaluate(k: int) -> bool:
        nonlocal result
        deadline.check(STEP, len(result.steps) if result else 0, limit)
        kept, started = list(ranked[:k]), time.monotonic()
        candidate = build(kept)
        value = score(candidate)
        if result is None:
            result = SensitivityResult(candidate, value, kept, False)
        # the layers: the ranking's first k
        result.steps.append({"kept_in_float": k, "score": value, "seconds": time.monotonic() - started})
        holds = validation.holds(fp32_score, value)
        if _merit(holds, k, value) > _merit(result.reached, len(result.excluded), result.score):
            result.candidate, result.score, result.excluded, result.reached = candidate, value, kept, holds
        return holds

    if evaluate(0) or not ranked:
        return result
    failing, holding = 0, len(ranked)  # invariant: k = failing misses; k = holding is assumed to hold
    while holding - failing > 1:
        middle = (failing + holding) // 2
        if evaluate(middle):
            holding = middle
        else:
            failing = middle
    if not any(step["kept_in_float"] == holding for step in result.steps):
        evaluate(holding)  # never assumed: the last k is evaluated like any other
    return result


def _merit(holds: bool, kept: int, value: float) -> tuple[int, float]:
    """The best candidate: the fewest layers in float among those that hold, else the highest score."""
    return (1, -kept) if holds else (0, value)
