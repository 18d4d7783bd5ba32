"""Estimates that know their error: device measurements kept on disk, and the correction they fit.

Every latency an agent measures is filed here with what the roofline model would have
estimated for it (``devices.estimate_ms``), by device kind (a profile id such as ``rpi4b``)::

    ~/.cache/edgeopt/measurements/<kind>.jsonl       (or EDGEOPT_MEASUREMENTS, or a path)

For a device with no agent, an estimate is the roofline figure times a correction fitted on
that kind's records, with a 90% prediction interval (log errors taken as normal):

    r_i        = log(measured_i / roofline_i)
    factor     = exp(mean r)
    spread     = t(0.95, n-1) × std(r) × sqrt(1 + 1/n)   (never under log 1.1)
    interval   = estimate × factor × exp(±spread)

The records used are the closest that number at least ``MIN_RECORDS``: the same backend and
precision, else the same precision (INT8 kernels scale differently from FP32 ones), else the
same backend, else every record of the device. With fewer, the uncorrected roofline gets a
wide ``UNCALIBRATED`` interval (×/÷ 3), and the report says that no measurement backs it.

Example:
    >>> records = [Observation("rpi4b", "onnxruntime", "fp32", estimate_ms=e, measured_ms=2 * e) for e in (1, 2, 4)]
    >>> correction = fit(records, "onnxruntime", "fp32")
    >>> round(correction.factor, 3), correction.basis
    (2.0, 3)
    >>> correction.apply(10.0)[0]
    20.0
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from edgeopt.core.errors import ConfigError

DEFAULT_STORE = Path.home() / ".cache" / "edgeopt" / "measurements"
MIN_RECORDS = 2
UNCALIBRATED = math.log(3.0)  # the roofline alone: an interval of ×/÷ 3 (benchmarks/agent.py measures how wrong it is)
MIN_SPREAD = math.log(1.1)
# Student's t, 95th percentile, by degrees of freedom (a two-sided 90% interval); 1.645 past the table
T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771, 1.761, 1.753,
       1.746, 1.740, 1.734, 1.729, 1.725)


@dataclass(frozen=True)
class Observation:
    """One artifact measured on a device, beside what the roofline estimated for it."""

    device: str
    backend: str
    precision: str
    estimate_ms: float  # the roofline estimate, before any correction
    measured_ms: float  # p50 measured on the device
    host_ms: float | None = None  # p50 here, the estimate's input
    host_threads: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    artifact: str | None = None  # its entry file's sha256: the same artifact measured twice is two records
    when: str = ""

    def __post_init__(self) -> None:
        if not (self.estimate_ms > 0 and self.measured_ms > 0):
            raise ConfigError("an observation needs positive estimated and measured latencies")


@dataclass(frozen=True)
class Correction:
    """``factor`` and log ``spread`` fitted on ``basis`` records (``scope``: which records)."""

    factor: float = 1.0
    spread: float = UNCALIBRATED
    basis: int = 0
    scope: str = "none: the roofline alone"

    def apply(self, estimate_ms: float) -> tuple[float, float, float]:
        """(corrected estimate, low, high) in ms."""
        centre = estimate_ms * self.factor
        return centre, centre * math.exp(-self.spread), centre * math.exp(self.spread)


def fit(observations: list[Observation], backend: str, precision: str) -> Correction:
    """The correction for ``backend`` at ``precision`` (see the module docstring)."""
    scopes = (
        (lambda o: o.backend == backend and o.precision == precision, f"{backend} {precision} on this device"),
        (lambda o: o.precision == precision, f"{precision} on this device"),
        (lambda o: o.backend == backend, f"{backend} on this device"),
        (lambda o: True, "every measurement of this device"),
    )
    for matches, scope in scopes:
        chosen = [o for o in observations if matches(o)]
        if len(chosen) >= MIN_RECORDS:
            break
    else:
        return Correction()
    logs = np.log([o.measured_ms / o.estimate_ms for o in chosen])
    n = len(logs)
    t = T95[n - 2] if n - 1 <= len(T95) else 1.645
    spread = max(t * float(np.std(logs, ddof=1)) * math.sqrt(1 + 1 / n), MIN_SPREAD)
    return Correction(factor=math.exp(float(np.mean(logs))), spread=spread, basis=n, scope=scope)


class MeasurementStore:
    """Observations by device kind, one JSON line each (``root``: a folder; None: the default)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or os.environ.get("EDGEOPT_MEASUREMENTS") or DEFAULT_STORE).expanduser()

    def _file(self, device: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in device)
        return self.root / f"{safe}.jsonl"

    def add(self, observation: Observation) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        record = asdict(observation)
        record["when"] = record["when"] or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self._file(observation.device).open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def observations(self, device: str) -> list[Observation]:
        """Every readable record of ``device`` (a line a kill cut short, or from a newer edgeopt, is skipped)."""
        file = self._file(device)
        known = {f.name for f in fields(Observation)}
        found = []
        for line in file.read_text().splitlines() if file.is_file() else []:
            try:
                found.append(Observation(**{k: v for k, v in json.loads(line).items() if k in known}))
            except (json.JSONDecodeError, TypeError, ConfigError):
                continue
        return found

    def correction(self, device: str, backend: str, precision: str) -> Correction:
        return fit(self.observations(device), backend, precision)
