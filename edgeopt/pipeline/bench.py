"""Benchmark a model across backends: compile and verify each, then time each in its own process.

Each backend gets one row: ``ok`` (with its Measurement), ``failed`` (with the reason,
e.g. parity) or ``unavailable`` (with the reason). Compilation and the parity check run
here; timing and peak memory are taken in a fresh worker process per backend, all with
the same intra-op thread count.

Example:
    >>> report = bench(load_model("torchvision:mobilenet_v2"), BenchConfig())   # doctest: +SKIP
    >>> [(r.backend, r.status) for r in report.results]                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgeopt.backends import all_backends, get_backend
from edgeopt.backends.base import PRECISIONS
from edgeopt.compile import export, unsupported_reason
from edgeopt.core.errors import ConfigError, EdgeoptError, ParityError
from edgeopt.measure import environment
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.process import MeasureConfig, measurement_from, time_artifact
from edgeopt.measure.measurement import Measurement
from edgeopt.models.sources import LoadedModel

if TYPE_CHECKING:
    import numpy as np

SCHEMA = 2


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how. ``backends=None`` means every registered backend.

    Each backend is measured at each of ``precisions`` it supports; with one precision,
    a backend lacking it is listed as unavailable, with several it is left out.
    """

    backends: tuple[str, ...] | None = None
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    precisions: tuple[str, ...] = ("fp32",)
    timing: TimingConfig = field(default_factory=TimingConfig)
    worker_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        self.measure_config  # validates batches and threads
        for name in self.backends or ():
            get_backend(name)  # raises ConfigError naming the known backends
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if not self.precisions or unknown:
            raise ConfigError(f"precisions must be among {', '.join(PRECISIONS)}, got {self.precisions}")

    @property
    def measure_config(self) -> MeasureConfig:
        return MeasureConfig(self.threads, self.batches, self.timing, self.worker_timeout_s)

    @property
    def thread_count(self) -> int:
        return self.measure_config.thread_count


@dataclass
class BackendResult:
    """One backend's row: status, and for ``ok`` what was measured and how the compile went."""

    backend: str
    precision: str
    status: str  # "ok" | "failed" | "unavailable"
    reason: str | None = None
    measurement: Measurement | None = None
    parity: dict[str, Any] | None = None
    compile_s: float | None = None
    load_ms: float | None = None
    speedup_vs_eager: float | None = None
    runtime_imports_torch: bool | None = None
    batches: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.status if self.status == "ok" else f"{self.status}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["measurement"] = self.measurement.to_dict() if self.measurement else None
        return data


@dataclass
class BenchReport:
    model: str
    environment: dict[str, Any]
    config: dict[str, Any]
    results: list[BackendResult]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "environment": self.environment, "config": self.config,
                "results": [r.to_dict() for r in self.results]}

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path


Progress = Callable[[str, str], None]


def bench(
    model: LoadedModel,
    config: BenchConfig,
    artifacts_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    calibration: "np.ndarray | None" = None,
) -> BenchReport:
    """Benchmark ``model`` on the configured backends; keep artifacts in ``artifacts_dir`` if given.

    ``calibration`` (real, preprocessed inputs) is needed for INT8.
    """
    progress = progress or (lambda backend, stage: None)
    names = config.backends or tuple(b.name for b in all_backends())
    pairs = [(name, precision) for name in names for precision in config.precisions
             if len(config.precisions) == 1 or precision in get_backend(name).capabilities.precisions]
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-") as scratch:
        root = Path(artifacts_dir) if artifacts_dir else Path(scratch)
        results = [_bench_one(model, name, precision, config, root / f"{name}-{precision}", progress, calibration)
                   for name, precision in pairs]
    _add_speedups(results)
    settings = dataclasses.asdict(config)
    settings["threads"] = config.thread_count
    return BenchReport(model.source, environment.collect(), settings, results)


def _bench_one(model: LoadedModel, name: str, precision: str, config: BenchConfig, out: Path, progress: Progress,
               calibration) -> BackendResult:
    result = BackendResult(backend=name, precision=precision, status="ok")
    reason = unsupported_reason(get_backend(name), model, precision)
    if reason:
        result.status, result.reason = "unavailable", reason
        return result
    progress(f"{name} {precision}", "compiling and checking parity")
    started = time.perf_counter()
    try:
        artifact = export(model, name, out, precision, threads=config.thread_count, overwrite=True,
                          calibration=calibration)
        result.compile_s, result.parity = time.perf_counter() - started, artifact.parity
        progress(f"{name} {precision}", "measuring in a fresh process")
        timing = time_artifact(artifact.path, config.measure_config)
    except ParityError as exc:
        result.status, result.reason = "failed", f"parity ({exc.detail})"
        return result
    except EdgeoptError as exc:
        result.status, result.reason = "failed", str(exc)
        return result
    result.measurement = measurement_from(timing, artifact.size_bytes, config.thread_count)
    result.batches, result.load_ms = timing["batches"], timing["load_ms"]
    result.runtime_imports_torch = timing["torch_imported"]
    return result


def _add_speedups(results: list[BackendResult]) -> None:
    eager = next((r for r in results if r.backend == "eager" and r.precision == "fp32" and r.measurement), None)
    if eager is None:
        return
    for r in results:
        if r.measurement:
            r.speedup_vs_eager = eager.measurement.latency_ms / r.measurement.latency_ms
