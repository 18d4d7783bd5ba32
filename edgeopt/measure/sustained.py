"""Sustained latency: run for minutes, not a burst, and say how much slower the end is than the start.

Passively cooled boards (a Raspberry Pi, a Jetson Nano) throttle after a few minutes; a
30-run burst never sees it. ``run_sustained`` calls a model back to back for ``seconds``,
keeps every latency with its time, samples the CPU temperature (``/sys/class/thermal``) and,
on a Raspberry Pi, the firmware's throttled flags (``vcgencmd get_throttled``), and reports
the p99 of the last window against the first: ``drift`` = last / first (1.0 = no change).
What the OS does not expose is reported as "not available", never guessed.

Example (recorded data: the last 10 s run 20% slower than the first 10 s):
    >>> times = [i * 0.1 for i in range(300)]
    >>> latencies = [10.0 if t < 15 else 12.0 for t in times]
    >>> first, last, ratio = drift(times, latencies, window_s=10)
    >>> first, last, round(ratio, 2)
    (10.0, 12.0, 1.2)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

THERMAL = Path("/sys/class/thermal")
NOT_AVAILABLE = "not available"


def drift(times_s: list[float], latencies_ms: list[float], window_s: float = 60.0) -> tuple[float, float, float]:
    """p99 of the first and of the last ``window_s`` of a run, and their ratio (last / first).

    A run shorter than two windows is split in halves, so the two windows never overlap.
    """
    times, latencies = np.asarray(times_s, np.float64), np.asarray(latencies_ms, np.float64)
    if len(times) != len(latencies) or len(times) < 2:
        raise ValueError("drift needs at least two (time, latency) pairs of equal count")
    start, end = float(times.min()), float(times.max())
    window = min(window_s, (end - start) / 2)
    first = latencies[times <= start + window]
    last = latencies[times >= end - window]
    p99_first, p99_last = float(np.percentile(first, 99)), float(np.percentile(last, 99))
    return p99_first, p99_last, p99_last / p99_first


def read_temperatures(root: Path = THERMAL) -> dict[str, float]:
    """Each thermal zone's type -> degrees Celsius (the kernel reports millidegrees); empty when none is exposed."""
    found: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")) if root.is_dir() else []:
        try:
            kind = (zone / "type").read_text().strip() or zone.name
            found[f"{kind}:{zone.name}" if kind in found else kind] = int((zone / "temp").read_text().strip()) / 1000
        except (OSError, ValueError):
            continue  # a zone that cannot be read (permissions, a sensor that is off) is skipped
    return found


def read_throttled() -> str | None:
    """A Raspberry Pi's ``vcgencmd get_throttled`` answer (e.g. ``throttled=0x50005``), or None elsewhere."""
    if shutil.which("vcgencmd") is None:
        return None
    try:
        answer = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return answer.stdout.strip() or None


@dataclass
class SustainedReport:
    seconds: float
    runs: int
    window_s: float
    p50_ms: float
    p99_first_ms: float
    p99_last_ms: float
    drift: float  # p99 last window / p99 first window
    temperatures: dict[str, list[float]] = field(default_factory=dict)  # zone -> samples (°C), one per second
    throttled: str = NOT_AVAILABLE
    energy_per_inference: str = NOT_AVAILABLE  # no power sensor is read yet

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["temperatures"] = self.temperatures or NOT_AVAILABLE
        return record


def run_sustained(call: Callable[[], Any], seconds: float = 60.0, window_s: float = 60.0,
                  sample_every_s: float = 1.0) -> SustainedReport:
    """Call ``call`` back to back for ``seconds``; latencies, drift, temperatures and throttling."""
    times, latencies = [], []
    temperatures: dict[str, list[float]] = {}
    started = time.perf_counter()
    next_sample = started
    while (now := time.perf_counter()) - started < seconds:
        if now >= next_sample:
            for zone, celsius in read_temperatures().items():
                temperatures.setdefault(zone, []).append(celsius)
            next_sample = now + sample_every_s
        before = time.perf_counter()
        call()
        after = time.perf_counter()
        times.append(after - started)
        latencies.append((after - before) * 1000)
    first, last, ratio = drift(times, latencies, window_s)
    return SustainedReport(seconds=round(time.perf_counter() - started, 3), runs=len(latencies),
                           window_s=min(window_s, (times[-1] - times[0]) / 2), p50_ms=float(np.median(latencies)),
                           p99_first_ms=first, p99_last_ms=last, drift=ratio, temperatures=temperatures,
                           throttled=read_throttled() or NOT_AVAILABLE)
