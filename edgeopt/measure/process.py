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

from edgeopt.core import trust
from edgeopt.core.errors import BackendError, ConfigError
from edgeopt.measure import environment
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.measurement import Measurement
from edgeopt.measure.worker import RESULT_PREFIX

MB = 2**20


@dataclass(frozen=True)
class MeasureConfig:
    """How to time an artifact: threads (None: every usable CPU), batch sizes, the protocol."""

    threads: int | None = None
    batches: tuple[int, ...] = (1,)
    timing: TimingConfig = field(default_factory=TimingConfig)
    timeout_s: float = 900.0
    sustained_s: float = 0.0  # > 0: also run batch 1 back to back this long (drift, temperature)
    memory_cap_mb: float | None = None  # the process is killed, and the model refused, past this RSS
    keep_outputs: bool = False  # return the raw outputs on ``inputs`` (a device's parity check)

    def __post_init__(self) -> None:
        if self.sustained_s < 0 or (self.memory_cap_mb is not None and self.memory_cap_mb <= 0):
            raise ConfigError("sustained seconds must be >= 0 and a memory cap positive")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batches}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")

    @property
    def thread_count(self) -> int:
        return self.threads or environment.cpu_count()


def time_artifact(artifact: str | os.PathLike, config: MeasureConfig, inputs: np.ndarray | None = None) -> dict[str, Any]:
    """Latency per batch size, load time, first call and peak RSS of ``artifact``, measured in a fresh process.

    ``inputs``: real preprocessed samples to time on (else seeded random ones). They matter for a
    detector, whose decoding and NMS take as long as the boxes it finds; the latency of a
    detector is always network + decoding + NMS, what a caller waits for. With
    ``config.keep_outputs`` the result's ``outputs`` are the model's raw outputs on them.
    Raises BackendError when the worker cannot load or run the artifact, runs past the timeout,
    or outgrows ``config.memory_cap_mb``.
    """
    threads = str(config.thread_count)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    job = {"artifact": str(artifact), "threads": config.thread_count, "batches": list(config.batches),
           "timing": dataclasses.asdict(config.timing), "sustained_s": config.sustained_s,
           "trust": trust.snapshot()}  # what the user vouched for here holds in the child, nothing more
    with tempfile.TemporaryDirectory(prefix="edgeopt-inputs-") as scratch:
        if inputs is not None:
            job["inputs"] = str(Path(scratch) / "inputs.npy")
            np.save(job["inputs"], np.ascontiguousarray(inputs[:64]), allow_pickle=False)
            if config.keep_outputs:
                job["outputs"] = str(Path(scratch) / "outputs.npz")
        stdout, stderr, returncode = _run_worker(job, env, config, artifact)
        result = _result_of(stdout, stderr, returncode)
        if job.get("outputs"):
            with np.load(job["outputs"], allow_pickle=False) as saved:
                result["outputs"] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return result


def _run_worker(job: dict[str, Any], env: dict[str, str], config: MeasureConfig, artifact) -> tuple[str, str, int]:
    """Run the worker; kill it past the timeout or (watched every 20 ms) past the memory cap."""
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "edgeopt.measure.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    over_cap: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            rss = rss_mb(proc.pid)
            if rss is not None and rss > config.memory_cap_mb:
                over_cap.append(rss)
                proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True) if config.memory_cap_mb else None
    if watcher:
        watcher.start()
    try:
        stdout, stderr = proc.communicate(json.dumps(job), timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BackendError(f"measuring {artifact} took longer than {config.timeout_s:.0f} s") from None
    finally:
        done.set()
    if over_cap:
        raise BackendError(f"{artifact} needs more than the {config.memory_cap_mb:.0f} MB of memory this device allows "
                           f"(its process reached {over_cap[0]:.0f} MB and was stopped); choose a smaller model or "
                           "INT8, or raise the cap")
    return stdout, stderr, proc.returncode


def rss_mb(pid: int) -> float | None:
    """A process's resident set size now (MB), from /proc; None where that cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _result_of(stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            if "error" in result:
                raise BackendError(result["error"])
            return result
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    raise BackendError(f"the measuring process died (exit code {returncode}): {last[:300]}")


def measurement_from(timing: dict[str, Any], size_bytes: int, threads: int, **extra: Any) -> Measurement:
    """A Measurement of the first batch size timed (batch 1 when timed), plus ``extra`` fields."""
    batches = timing["batches"]
    timed = [b for b in batches.values() if "p50" in b]
    if not timed:
        raise BackendError(f"no batch size could be timed: {'; '.join(b.get('skipped', '') for b in batches.values())}")
    first = batches["1"] if "p50" in batches.get("1", {}) else timed[0]
    sustained = timing.get("sustained")
    return Measurement(latency_ms=first["p50"], p90_ms=first["p90"], p99_ms=first["p99"], peak_rss_mb=first["peak_rss_mb"],
                       size_mb=size_bytes / MB, threads=threads,
                       throughput={key: b["throughput"] for key, b in batches.items() if "throughput" in b},
                       load_ms=timing.get("load_ms"), first_ms=timing.get("first_ms"),
                       sustained={k: v for k, v in sustained.items() if k != "temperatures"} | {
                           "temperatures": _temperature_range(sustained["temperatures"])} if sustained else None,
                       **extra)


def _temperature_range(temperatures) -> dict[str, list[float]] | str:
    """Per zone: the first and the highest reading (a journal line, not every second's sample)."""
    if isinstance(temperatures, str):
        return temperatures
    return {zone: [values[0], max(values)] for zone, values in temperatures.items() if values}
