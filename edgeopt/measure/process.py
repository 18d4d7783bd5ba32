"""Timing an artifact in a fresh process, so its peak memory is its own.

The parent starts ``python -m edgeopt.measure.worker``, hands it the artifact and the
timing protocol, and reads one result line back. Loading an ONNX Runtime or OpenVINO
artifact there imports no torch, just as on an edge box; the same intra-op thread count
is set for every runtime.

Example:
    >>> timing = time_artifact("out/mbv2-ort", MeasureConfig(threads=2))     # doctest: +SKIP
    >>> timing["batches"]["1"]["p50"]                                         # doctest: +SKIP
    3.1
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import BackendError, ConfigError
from edgeopt.measure import environment
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.record import Measurement
from edgeopt.measure.worker import RESULT_PREFIX

MB = 2**20


@dataclass(frozen=True)
class MeasureConfig:
    """How to time an artifact: threads (None: every usable CPU), batch sizes, the protocol."""

    threads: int | None = None
    batches: tuple[int, ...] = (1,)
    timing: TimingConfig = field(default_factory=TimingConfig)
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batches}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")

    @property
    def thread_count(self) -> int:
        return self.threads or environment.cpu_count()


def time_artifact(artifact: str | os.PathLike, config: MeasureConfig, inputs: np.ndarray | None = None) -> dict[str, Any]:
    """Latency per batch size, load time and peak RSS of ``artifact``, measured in a fresh process.

    ``inputs``: real preprocessed samples to time on (else seeded random ones). They matter for a
    detector, whose decoding and NMS take as long as the boxes it finds; the latency of a
    detector is always network + decoding + NMS, what a caller waits for.
    Raises BackendError when the worker cannot load or run the artifact.
    """
    threads = str(config.thread_count)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    job = {"artifact": str(artifact), "threads": config.thread_count, "batches": list(config.batches),
           "timing": dataclasses.asdict(config.timing)}
    with tempfile.TemporaryDirectory(prefix="edgeopt-inputs-") as scratch:
        if inputs is not None:
            job["inputs"] = str(Path(scratch) / "inputs.npy")
            np.save(job["inputs"], np.ascontiguousarray(inputs[:64]), allow_pickle=False)
        try:
            proc = subprocess.run([sys.executable, "-m", "edgeopt.measure.worker"], input=json.dumps(job),
                                  capture_output=True, text=True, env=env, timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            raise BackendError(f"measuring {artifact} took longer than {config.timeout_s:.0f} s") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            if "error" in result:
                raise BackendError(result["error"])
            return result
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise BackendError(f"the measuring process died (exit code {proc.returncode}): {last[:300]}")


def measurement_from(timing: dict[str, Any], size_bytes: int, threads: int, **extra: Any) -> Measurement:
    """A Measurement of the first batch size timed (batch 1 when timed), plus ``extra`` fields."""
    batches = timing["batches"]
    timed = [b for b in batches.values() if "p50" in b]
    if not timed:
        raise BackendError(f"no batch size could be timed: {'; '.join(b.get('skipped', '') for b in batches.values())}")
    first = batches["1"] if "p50" in batches.get("1", {}) else timed[0]
    return Measurement(latency_ms=first["p50"], p90_ms=first["p90"], p99_ms=first["p99"], peak_rss_mb=first["peak_rss_mb"],
                       size_mb=size_bytes / MB, threads=threads,
                       throughput={key: b["throughput"] for key, b in batches.items() if "throughput" in b}, **extra)
