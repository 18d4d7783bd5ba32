"""Goals of a search: the bounds a candidate must meet, and the priority among those that do.

The priorities are the guide's three strategies: ``latency`` (quantization and the fastest
runtime), ``accuracy`` (distillation and fine-tuning), ``memory`` (pruning and INT8). The
quality bound names a metric of the task (None: its main one, top-1 for a classifier);
``max_drop`` is the most points of it a candidate may lose against the baseline.

Example:
    >>> goals = Goals(max_drop=1.0, priority="latency")
    >>> m = Measurement(latency_ms=2.0, peak_rss_mb=90.0, size_mb=1.0, threads=2)
    >>> goals.violations(m, drop_points=0.5)
    []
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from edgeopt.core.errors import ConfigError
from edgeopt.measure.measurement import Measurement

PRIORITIES = ("latency", "accuracy", "memory")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(text: str) -> float:
    """'30m' -> 1800.0 seconds; s, m, h suffixes, plain numbers are seconds."""
    match = DURATION.match(text)
    if not match:
        raise ConfigError(f"a duration looks like 90s, 30m or 2h; got {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "s"
    seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise ConfigError(f"a duration must be positive; got {text!r}")
    return seconds


@dataclass(frozen=True)
class Violation:
    """One goal a candidate misses: which, its bound, the candidate's value and the unit."""

    goal: str  # max_drop | max_latency_ms | max_sustained_p99_ms | max_size_mb | max_memory_mb | memory_cap
    #            | max_sram_kb | max_flash_kb
    bound: float
    value: float
    unit: str
    subject: str = ""  # what the value is of: the metric's title, the device's name

    @property
    def text(self) -> str:
        if self.goal == "max_drop":
            return f"loses {self.value:.2f} points of {self.subject} (at most {self.bound:g})"
        if self.goal == "memory_cap":
            return f"peak memory {self.value:.0f} MB (the {self.subject} cap is {self.bound:.0f} MB)"
        what = {"max_latency_ms": "p50", "max_sustained_p99_ms": "sustained p99", "max_size_mb": "size",
                "max_memory_mb": "peak memory", "max_sram_kb": "arena", "max_flash_kb": "flash"}[self.goal]
        value = f"{self.value:.0f}" if self.unit == "KB" else f"{self.value:.3g}"
        return f"{what} {value} {self.unit} (at most {self.bound:g})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Violation":
        return cls(**data)


@dataclass(frozen=True)
class Goals:
    """Bounds (None: unbounded) and the priority that picks among candidates meeting them."""

    max_latency_ms: float | None = None
    max_sustained_p99_ms: float | None = None  # p99 of the last minute of a sustained run
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    max_drop: float | None = 1.0
    metric: str | None = None
    priority: str = "latency"
    max_sram_kb: float | None = None  # a microcontroller's hard limits: the tensor arena TFLM measures,
    max_flash_kb: float | None = None  # and the flatbuffer plus the runtime in flash

    @property
    def microcontroller(self) -> bool:
        """Whether the goals bound a microcontroller's SRAM or flash (only TFLM artifacts can meet them)."""
        return self.max_sram_kb is not None or self.max_flash_kb is not None

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ConfigError(f"the priority must be one of {', '.join(PRIORITIES)}; got {self.priority!r}")
        if self.max_drop is not None and not math.isfinite(self.max_drop):
            raise ConfigError(f"max_drop must be a number of points; got {self.max_drop}")
        for name in ("max_latency_ms", "max_sustained_p99_ms", "max_size_mb", "max_memory_mb", "max_sram_kb",
                     "max_flash_kb"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number; got {value}")

    def violations(self, measured: Measurement, drop_points: float | None, metric_title: str = "the main metric",
                   memory_cap_mb: float | None = None, device: str = "device") -> list[Violation]:
        """Each goal ``measured`` misses; empty when it meets them all."""
        checks = (
            ("max_drop", self.max_drop, drop_points, "points", metric_title),
            ("max_latency_ms", self.max_latency_ms, measured.latency_ms, "ms", ""),
            ("max_sustained_p99_ms", self.max_sustained_p99_ms,
             measured.sustained["p99_last_ms"] if measured.sustained else None, "ms", ""),
            ("max_size_mb", self.max_size_mb, measured.size_mb, "MB", ""),
            ("max_memory_mb", self.max_memory_mb, measured.peak_rss_mb, "MB", ""),
            ("memory_cap", memory_cap_mb, measured.peak_rss_mb, "MB", device),
            ("max_sram_kb", self.max_sram_kb, measured.arena_kb, "KB", ""),
            ("max_flash_kb", self.max_flash_kb, measured.flash_kb, "KB", ""),
        )
        return [Violation(goal, bound, value, unit, subject) for goal, bound, value, unit, subject in checks
                if bound is not None and value is not None and value > bound + 1e-9]

    def shortfall(self, violations: list[Violation]) -> float:
        """How far from meeting the goals: summed relative excesses (a point of drop counts as 10%)."""
        total = 0.0
        for v in violations:
            total += (v.value - v.bound) / 100.0 * 10 if v.goal == "max_drop" else v.value / v.bound - 1.0
        return total

    def describe(self, metric_title: str = "the main metric") -> str:
        bounds = {"max_latency_ms": "p50 at most {:g} ms", "max_sustained_p99_ms": "sustained p99 at most {:g} ms",
                  "max_size_mb": "size at most {:g} MB",
                  "max_memory_mb": "peak memory at most {:g} MB", "max_sram_kb": "arena at most {:g} KB",
                  "max_flash_kb": "flash at most {:g} KB"}
        parts = [f"at most {self.max_drop:g} point{'s' if self.max_drop != 1 else ''} of {metric_title} lost"] \
            if self.max_drop is not None else []
        parts += [text.format(getattr(self, name)) for name, text in bounds.items() if getattr(self, name) is not None]
        return f"priority {self.priority}" + (f"; {', '.join(parts)}" if parts else "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("max_sram_kb", "max_flash_kb"):  # absent unless set: a search started before them still resumes
            if data[name] is None:
                del data[name]
        return data
