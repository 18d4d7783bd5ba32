"""The timing protocol: warm up, then repeat until both N iterations and T seconds pass.

Percentiles, not means, are the headline: edge latency budgets are about the slow tail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeopt.core.errors import ConfigError


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure. ``max_seconds`` stops very slow models early (min 5 runs)."""

    warmup: int = 10
    min_iters: int = 50
    min_seconds: float = 2.0
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_iters < 1 or self.min_seconds < 0 or self.max_seconds <= 0:
            raise ConfigError("timing needs warmup >= 0, min_iters >= 1, min_seconds >= 0, max_seconds > 0")


def time_calls(call: Callable[[], Any], config: TimingConfig) -> list[float]:
    """Run ``call`` under the protocol; return each timed call's duration in ms."""
    for _ in range(config.warmup):
        call()
    durations: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        call()
        durations.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        if len(durations) >= config.min_iters and elapsed >= config.min_seconds:
            break
        if elapsed >= config.max_seconds and len(durations) >= 5:
            break
    return durations


def summarize(durations_ms: list[float], batch: int) -> dict[str, Any]:
    """Percentiles, mean and throughput (samples/s) of a list of call durations."""
    values = np.asarray(durations_ms)
    mean = float(values.mean())
    return {
        "batch": batch,
        "iterations": int(values.size),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "mean": mean,
        "min": float(values.min()),
        "std": float(values.std()),
        "throughput": batch * 1000.0 / mean,
    }
