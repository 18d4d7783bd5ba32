"""Goals of a search: the bounds a candidate must meet, and the priority among those that do.

The priorities are the guide's three strategies: ``latency`` (quantization and the fastest
runtime), ``accuracy`` (distillation and fine-tuning), ``memory`` (pruning and INT8).

Example:
    >>> goals = Goals(max_accuracy_drop=1.0, priority="latency")
    >>> goals.violations({"drop_points": 0.5, "latency_ms": 2.0, "size_mb": 1.0, "peak_rss_mb": 90.0})
    []
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from edgeopt.errors import ConfigError

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
class Goals:
    """Bounds (None: unbounded) and the priority that picks among candidates meeting them."""

    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    max_accuracy_drop: float | None = 1.0
    priority: str = "latency"

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ConfigError(f"--priority must be one of {', '.join(PRIORITIES)}; got {self.priority!r}")
        for name in ("max_latency_ms", "max_size_mb", "max_memory_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive; got {value}")

    def violations(self, record: dict[str, Any]) -> list[str]:
        """Each goal ``record`` misses, as 'goal: value' text; empty when it meets them all."""
        checks = (
            ("max-accuracy-drop", self.max_accuracy_drop, record.get("drop_points"), "points"),
            ("max-latency-ms", self.max_latency_ms, record.get("latency_ms"), "ms"),
            ("max-size-mb", self.max_size_mb, record.get("size_mb"), "MB"),
            ("max-memory-mb", self.max_memory_mb, record.get("peak_rss_mb"), "MB"),
        )
        missed = []
        for goal, bound, value, unit in checks:
            if bound is not None and value is not None and value > bound + 1e-9:
                missed.append(f"--{goal} {bound:g}: {value:.3g} {unit}")
        return missed

    def shortfall(self, record: dict[str, Any]) -> float:
        """How far ``record`` is from meeting the goals: sum of relative excesses (0 = meets all)."""
        total = 0.0
        for bound, value in ((self.max_latency_ms, record.get("latency_ms")), (self.max_size_mb, record.get("size_mb")),
                             (self.max_memory_mb, record.get("peak_rss_mb"))):
            if bound is not None and value is not None and value > bound:
                total += value / bound - 1.0
        if self.max_accuracy_drop is not None and record.get("drop_points") is not None:
            total += max(0.0, record["drop_points"] - self.max_accuracy_drop) / 100.0 * 10  # 1 point ~ 10% slower
        return total

    def describe(self) -> str:
        parts = [f"{name.replace('_', '-')} {value:g}" for name, value in asdict(self).items()
                 if name != "priority" and value is not None]
        return f"priority {self.priority}" + (f"; {', '.join(parts)}" if parts else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
