"""Benchmark a model across backends: compile, verify parity, then time each in its own process.

Each backend gets one row: ``ok``, ``failed`` (with the reason, e.g. parity) or
``unavailable`` (with the reason). Compilation and the parity check run here;
timing and peak memory are taken in a fresh worker process per backend, all with the
same intra-op thread count.

Example:
    >>> report = bench(load_model("torchvision:mobilenet_v2"), BenchConfig())   # doctest: +SKIP
    >>> [(r.backend, r.status) for r in report.results]                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgeopt.backends import all_backends, get_backend
from edgeopt.backends.base import PRECISIONS
from edgeopt.errors import ConfigError, EdgeoptError, ParityError
from edgeopt.export import export, unsupported_reason
from edgeopt.measure import environment
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.worker import RESULT_PREFIX
from edgeopt.models import LoadedModel

if TYPE_CHECKING:
    import numpy as np

MB = 1024 * 1024


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
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batches}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        for name in self.backends or ():
            get_backend(name)  # raises ConfigError naming the known backends
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if not self.precisions or unknown:
            raise ConfigError(f"precisions must be among {', '.join(PRECISIONS)}, got {self.precisions}")

    @property
    def thread_count(self) -> int:
        return self.threads or environment.cpu_count()


@dataclass
class BackendResult:
    """One backend's row: status, size, latency, memory and parity."""

    backend: str
    precision: str
    status: str  # "ok" | "failed" | "unavailable"
    reason: str | None = None
    size_mb: float | None = None
    latency_ms: dict[str, float] | None = None
    fps: float | None = None
    throughput: dict[str, float | None] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    load_ms: float | None = None
    compile_s: float | None = None
    parity: dict[str, Any] | None = None
    speedup_vs_eager: float | None = None
    runtime_imports_torch: bool | None = None
    batches: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.status if self.status == "ok" else f"{self.status}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BenchReport:
    model: str
    environment: dict[str, Any]
    config: dict[str, Any]
    results: list[BackendResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "environment": self.environment,
            "config": self.config,
            "results": [r.to_dict() for r in self.results],
        }

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
    backend = get_backend(name)
    result = BackendResult(backend=name, precision=precision, status="ok")
    reason = unsupported_reason(backend, model, precision)
    if reason:
        result.status, result.reason = "unavailable", reason
        return result
    progress(f"{name} {precision}", "compiling and checking parity")
    started = time.perf_counter()
    try:
        artifact = export(model, name, out, precision, threads=config.thread_count, overwrite=True,
                          calibration=calibration)
    except ParityError as exc:
        result.status, result.reason = "failed", f"parity ({exc.detail})"
        return result
    except EdgeoptError as exc:
        result.status, result.reason = "failed", str(exc)
        return result
    result.compile_s = time.perf_counter() - started
    result.size_mb = artifact.size_bytes / MB
    result.parity = artifact.parity
    progress(f"{name} {precision}", "measuring in a fresh process")
    measured = _measure_in_subprocess(artifact.path, config)
    if "error" in measured:
        result.status, result.reason = "failed", measured["error"]
        return result
    _fill_timings(result, measured, config.batches)
    return result


def measure_artifact(artifact: str | os.PathLike, config: BenchConfig) -> dict[str, Any]:
    """Time an existing artifact in a fresh worker process: per-batch latency and peak RSS."""
    return _measure_in_subprocess(Path(artifact), config)


def _measure_in_subprocess(artifact: Path, config: BenchConfig) -> dict[str, Any]:
    threads = str(config.thread_count)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    job = {
        "artifact": str(artifact),
        "threads": config.thread_count,
        "batches": list(config.batches),
        "timing": dataclasses.asdict(config.timing),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeopt.measure.worker"], input=json.dumps(job), capture_output=True,
            text=True, env=env, timeout=config.worker_timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"measurement took longer than {config.worker_timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"measurement process died (exit code {proc.returncode}): {last[:300]}"}


def _fill_timings(result: BackendResult, measured: dict[str, Any], batches: tuple[int, ...]) -> None:
    result.batches = measured["batches"]
    result.load_ms = measured["load_ms"]
    result.runtime_imports_torch = measured["torch_imported"]
    result.throughput = {str(b): measured["batches"][str(b)].get("throughput") for b in batches}
    first = measured["batches"][str(min(batches))]
    if "p50" in first:
        result.latency_ms = {k: first[k] for k in ("p50", "p90", "p99", "mean")}
        result.peak_rss_mb = first["peak_rss_mb"]  # at the latency batch; larger batches are in .batches
    if "1" in measured["batches"] and "throughput" in measured["batches"]["1"]:
        result.fps = measured["batches"]["1"]["throughput"]


def _add_speedups(results: list[BackendResult]) -> None:
    eager = next((r for r in results if r.backend == "eager" and r.precision == "fp32" and r.latency_ms), None)
    if eager is None:
        return
    for r in results:
        if r.latency_ms:
            r.speedup_vs_eager = eager.latency_ms["p50"] / r.latency_ms["p50"]
