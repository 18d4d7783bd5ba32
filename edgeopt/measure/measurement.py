"""Measurement: the one record of what was measured about one artifact.

Bench rows, search candidates, goals, the Pareto choice, reports and ``results.json`` all
read this record, so a figure means the same thing everywhere. ``metrics`` holds the
task's quality metrics by name (``{"top1": 0.98, "top5": 1.0}`` for a classifier), so
nothing downstream assumes top-1. ``SCHEMA`` versions the JSON form.

Example:
    >>> m = Measurement(latency_ms=0.4, peak_rss_mb=80.0, size_mb=0.8, threads=2, metrics={"top1": 0.98})
    >>> Measurement.from_dict(m.to_dict()) == m
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgeopt.core.errors import ConfigError

SCHEMA = 1


@dataclass(frozen=True)
class Measurement:
    """Latency at batch 1 (``latency_ms`` is the p50 on the target: an estimate when
    ``estimated``, else ``measured_ms``, measured here or — ``measured_on`` — on the device by
    its agent), memory, size, cost and quality of one artifact."""

    latency_ms: float
    peak_rss_mb: float
    size_mb: float
    threads: int
    p90_ms: float | None = None
    p99_ms: float | None = None
    measured_ms: float | None = None  # p50 measured (here, or on the device by its agent)
    estimated: bool = False
    throughput: dict[str, float] = field(default_factory=dict)  # samples/s by batch size
    metrics: dict[str, float] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    macs: int | None = None
    params: int | None = None
    measured_on: str | None = None  # the device whose agent measured it; None: this machine
    host_ms: float | None = None  # p50 on this machine, when the target was measured elsewhere
    load_ms: float | None = None  # cold load of the artifact
    first_ms: float | None = None  # its first call after loading
    sustained: dict[str, Any] | None = None  # minutes back to back: p99 first and last window, drift, temperatures
    estimate_low_ms: float | None = None  # an estimate's interval, and how many device measurements back it
    estimate_high_ms: float | None = None
    estimate_basis: int | None = None
    arena_kb: float | None = None  # a microcontroller artifact: the tensor arena TFLM measured, and
    flash_kb: float | None = None  # its flash (flatbuffer + runtime estimate); None for any other runtime
    on_devices: dict[str, float | None] = field(default_factory=dict)  # a farm's other devices: p50 ms by device
    p50_runs: list[float] = field(default_factory=list)  # p50 of each timing process, when re-timed: latency_ms is their median

    def __post_init__(self) -> None:
        if self.measured_ms is None:
            object.__setattr__(self, "measured_ms", self.latency_ms)

    def metric(self, name: str) -> float:
        if name not in self.metrics:
            raise ConfigError(f"no metric {name!r} was measured; measured: {', '.join(self.metrics) or 'none'}")
        return self.metrics[name]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurement":
        if data.get("schema", SCHEMA) > SCHEMA:
            raise ConfigError(f"a measurement of schema {data['schema']} is newer than this edgeopt reads ({SCHEMA}); "
                              "upgrade edgeopt")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
