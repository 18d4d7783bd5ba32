"""Sustained latency: run for minutes, not a burst, and say how much slower the end is than the start.

Passively cooled boards (a Raspberry Pi, a Jetson Nano) throttle after a few minutes; a
30-run burst never sees it. ``run_sustained`` calls a model back to back for ``seconds``,
keeps every latency with its time, samples the CPU temperature (``/sys/class/thermal``) and,
on a Raspberry Pi, the firmware's throttled flags (``vcgencmd get_throttled``), and reports
the p99 of the last window against the first: ``drift`` = last / first (1.0 = no change).
Energy per inference comes from an energy counter (RAPL, ``/sys/class/powercap``: x86 boxes)
or, failing that, from power sensors sampled each second (``/sys/class/hwmon``: a Jetson's
INA3221 rails, INA219/226 boards). What the OS does not expose is reported as "not available",
never guessed.

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
POWERCAP = Path("/sys/class/powercap")
HWMON = Path("/sys/class/hwmon")
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


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_energy_uj(root: Path = POWERCAP) -> dict[str, tuple[int, int | None]]:
    """Each top-level RAPL zone (package) -> (energy counter in µJ, its wrap-around range); empty when none."""
    found = {}
    for zone in sorted(root.glob("intel-rapl:*")) if root.is_dir() else []:
        if zone.name.count(":") != 1:  # a sub-zone (core, uncore) is already inside its package
            continue
        energy = _read_int(zone / "energy_uj")
        if energy is not None:
            found[zone.name] = (energy, _read_int(zone / "max_energy_range_uj"))
    return found


def read_power_mw(root: Path = HWMON) -> dict[str, float]:
    """Each hwmon power sensor (``<chip>:<label>``) -> milliwatts now (the kernel reports µW); empty when none."""
    found: dict[str, float] = {}
    for chip in sorted(root.glob("hwmon*")) if root.is_dir() else []:
        name = (chip / "name").read_text().strip() if (chip / "name").is_file() else chip.name
        for sensor in sorted(chip.glob("power*_input")):
            microwatts = _read_int(sensor)
            if microwatts is None:
                continue
            label_file = sensor.with_name(sensor.name.replace("_input", "_label"))
            label = label_file.read_text().strip() if label_file.is_file() else sensor.name.split("_")[0]
            found[f"{name}:{label}"] = microwatts / 1000
    return found


def energy_used_j(before: dict[str, tuple[int, int | None]], after: dict[str, tuple[int, int | None]]) -> float | None:
    """Joules between two counter readings, summed over zones, a wrapped counter unwrapped; None without counters."""
    total, seen = 0.0, False
    for zone, (start, _) in before.items():
        if zone not in after:
            continue
        end, wrap = after[zone]
        delta = end - start if end >= start else end - start + (wrap or 0)
        if delta >= 0:
            total, seen = total + delta / 1e6, True
    return total if seen else None


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
    energy_per_inference: str = NOT_AVAILABLE  # e.g. "3.1 mJ (RAPL energy counter)"
    power_mw: dict[str, float] = field(default_factory=dict)  # mean of each power sensor over the run

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["temperatures"] = self.temperatures or NOT_AVAILABLE
        record["power_mw"] = self.power_mw or NOT_AVAILABLE
        return record


def run_sustained(call: Callable[[], Any], seconds: float = 60.0, window_s: float = 60.0,
                  sample_every_s: float = 1.0) -> SustainedReport:
    """Call ``call`` back to back for ``seconds``; latencies, drift, temperatures, throttling and energy."""
    times, latencies = [], []
    temperatures: dict[str, list[float]] = {}
    power: dict[str, list[float]] = {}
    counters = read_energy_uj()
    started = time.perf_counter()
    next_sample = started
    while (now := time.perf_counter()) - started < seconds:
        if now >= next_sample:
            for zone, celsius in read_temperatures().items():
                temperatures.setdefault(zone, []).append(celsius)
            for sensor, milliwatts in read_power_mw().items():
                power.setdefault(sensor, []).append(milliwatts)
            next_sample = now + sample_every_s
        before = time.perf_counter()
        call()
        after = time.perf_counter()
        times.append(after - started)
        latencies.append((after - before) * 1000)
    elapsed = time.perf_counter() - started
    joules = energy_used_j(counters, read_energy_uj())
    mean_power = {sensor: float(np.mean(values)) for sensor, values in power.items()}
    first, last, ratio = drift(times, latencies, window_s)
    return SustainedReport(seconds=round(elapsed, 3), runs=len(latencies),
                           window_s=min(window_s, (times[-1] - times[0]) / 2), p50_ms=float(np.median(latencies)),
                           p99_first_ms=first, p99_last_ms=last, drift=ratio, temperatures=temperatures,
                           throttled=read_throttled() or NOT_AVAILABLE, power_mw=mean_power,
                           energy_per_inference=energy_text(joules, mean_power, elapsed, len(latencies)))


def energy_text(joules: float | None, mean_power_mw: dict[str, float], seconds: float, runs: int) -> str:
    """Energy per inference, and where it came from: the counter if any, else the power sensors — the
    board's input rail alone where one is labelled so (a Jetson's VDD_IN already holds its other rails)."""
    if joules is not None:
        return f"{joules / runs * 1e3:.3g} mJ (RAPL energy counter, whole package)"
    inputs = {name: mw for name, mw in mean_power_mw.items() if name.upper().endswith("_IN")}
    sensors = inputs or mean_power_mw
    if sensors:
        return f"{sum(sensors.values()) / 1e3 * seconds / runs * 1e3:.3g} mJ (power sensors: {', '.join(sensors)})"
    return NOT_AVAILABLE
