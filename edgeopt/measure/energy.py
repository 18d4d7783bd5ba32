"""Energy from the machine's own counters: RAPL (Linux powercap, Intel and AMD) or a hwmon energy sensor.

Both count microjoules for a whole package or board, not for one process: joules per frame read
this way include everything else the machine did meanwhile, which on an edge box running one
stream is little. Only the CPU packages are summed (RAPL's ``psys`` zone holds the package, and
subzones such as the cores lie inside it; AMD's hwmon per-core counters lie inside its socket
counters). A ``EnergyTally`` reads the counters as the work goes on, so a counter that rolls over
(RAPL's wraps every hour or so at full load) is unrolled each time. Where no counter is readable
(most VMs and containers; RAPL needs root since Linux 5.10) the meter says so instead of inventing
a figure; an estimate from a device profile's published power draw is labelled as one
(``estimate_joules``).

Example:
    >>> EnergyMeter.find(roots=()) is None, UNAVAILABLE.startswith("not available")
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

POWERCAP = Path("/sys/class/powercap")
HWMON = Path("/sys/class/hwmon")
UNAVAILABLE = ("not available: no RAPL (powercap) or hwmon energy counter is readable here (most VMs and containers "
               "have none; RAPL's energy_uj needs root since Linux 5.10)")


@dataclass(frozen=True)
class EnergyMeter:
    """Cumulative microjoule counters, one per CPU package; ``wrap_uj``: where each rolls over."""

    counters: tuple[Path, ...]
    wrap_uj: tuple[int, ...]
    source: str

    @classmethod
    def find(cls, roots: Sequence[Path] = (POWERCAP, HWMON)) -> "EnergyMeter | None":
        """RAPL's package zones, else hwmon's socket (or only) energy inputs; None when neither is readable."""
        for root in roots:
            if root.name == "hwmon":
                counters, source = _hwmon_packages(root), "hwmon energy sensor (the whole CPU package)"
                wraps = [2**64] * len(counters)
            else:
                counters = [zone / "energy_uj" for zone in sorted(root.glob("*rapl:[0-9]*"))
                            if zone.name.count(":") == 1 and _text(zone / "name").startswith("package")]
                wraps = [_int(c.with_name("max_energy_range_uj")) or 2**32 for c in counters]
                source = "RAPL package counter (the whole CPU package, not only this process)"
            readable = [(c, w) for c, w in zip(counters, wraps) if _int(c) is not None]
            if readable:
                return cls(tuple(c for c, _ in readable), tuple(w for _, w in readable), source)
        return None

    def read_uj(self) -> list[int | None]:
        return [_int(counter) for counter in self.counters]


class EnergyTally:
    """Joules counted since it was made, read whenever ``update`` is called (often enough to see every rollover)."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter, self.last, self.joules = meter, meter.read_uj(), 0.0

    def update(self) -> float:
        for index, (before, now, wrap) in enumerate(zip(self.last, self.meter.read_uj(), self.meter.wrap_uj)):
            if before is None or now is None:  # a failed read: keep the last good one, count from there next time
                self.last[index] = now if before is None else before
                continue
            self.joules += ((now - before) if now >= before else (now + wrap - before)) / 1e6
            self.last[index] = now
        return self.joules


def _hwmon_packages(root: Path) -> list[Path]:
    """hwmon energy inputs; where some are labelled as a socket or package (AMD's amd_energy also has one per core,
    inside the socket's), only those."""
    inputs = sorted(root.glob("hwmon*/energy*_input"))
    labelled = [p for p in inputs if any(word in _text(p.with_name(p.name.replace("_input", "_label"))).lower()
                                         for word in ("socket", "package"))]
    return labelled or inputs


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _int(path: Path) -> int | None:
    text = _text(path)  # read once: the stream reads every counter every frame
    try:
        return int(text) if text else None
    except ValueError:
        return None


def estimate_joules(busy_watts: float, seconds_per_frame: float) -> float:
    """Joules per frame of a device that draws ``busy_watts`` while it works a frame for ``seconds_per_frame``
    (an estimate: a published board figure times a latency, not a measurement)."""
    return busy_watts * seconds_per_frame
