"""Energy from the machine's own counters: RAPL (Linux powercap, Intel and AMD) or a hwmon energy sensor.

Both count microjoules for a whole package or board, not for one process: joules per frame read
this way include everything else the machine did meanwhile, which on an edge box running one
stream is little. Where no counter is readable (most VMs, containers, this project's CI), the
meter says so instead of inventing a figure; an estimate from a device profile's published
power draw is labelled as one (``estimate_joules``).

Example:
    >>> meter = EnergyMeter.find(roots=())   # no counters to look in
    >>> meter is None, UNAVAILABLE.startswith("not available")
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

POWERCAP = Path("/sys/class/powercap")
HWMON = Path("/sys/class/hwmon")
UNAVAILABLE = "not available: no RAPL (powercap) or hwmon energy counter is readable on this machine"


@dataclass(frozen=True)
class EnergyMeter:
    """Cumulative microjoule counters summed over the machine's packages; ``wrap_uj``: where each rolls over."""

    counters: tuple[Path, ...]
    wrap_uj: tuple[int, ...]
    source: str

    @classmethod
    def find(cls, roots: Sequence[Path] = (POWERCAP, HWMON)) -> "EnergyMeter | None":
        """RAPL's package zones (``intel-rapl:N``, no subzones: they are inside the package), else hwmon's
        ``energy*_input``; None when neither is readable."""
        for root in roots:
            if root == HWMON or root.name == "hwmon":
                counters = sorted(root.glob("hwmon*/energy*_input"))
                wraps = [2**64] * len(counters)
                source = "hwmon energy sensor"
            else:
                counters = sorted(p / "energy_uj" for p in root.glob("*rapl:[0-9]*") if p.name.count(":") == 1)
                wraps = [_int(p.with_name("max_energy_range_uj")) or 2**32 for p in counters]
                source = "RAPL package counter (the whole CPU package, not only this process)"
            readable = [(c, w) for c, w in zip(counters, wraps) if _int(c) is not None]
            if readable:
                return cls(tuple(c for c, _ in readable), tuple(w for _, w in readable), source)
        return None

    def read_uj(self) -> list[int]:
        return [_int(counter) or 0 for counter in self.counters]

    def joules_since(self, start_uj: list[int]) -> float:
        """Joules counted since ``start_uj`` (a counter that rolled over once is unrolled)."""
        total = 0
        for before, after, wrap in zip(start_uj, self.read_uj(), self.wrap_uj):
            total += after - before if after >= before else after + wrap - before
        return total / 1e6


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def estimate_joules(busy_watts: float, seconds_per_frame: float) -> float:
    """Joules per frame of a device that draws ``busy_watts`` while it works a frame for ``seconds_per_frame``
    (an estimate: a published board figure times a latency, not a measurement)."""
    return busy_watts * seconds_per_frame
