"""Device profiles: the hardware matrix as data, emulated here or estimated for.

A ``DeviceProfile`` is read from ``profiles.toml`` (the guide's Raspberry Pi 4B, Jetson
Nano and AGX Xavier, plus Raspberry Pi 5, Jetson Orin Nano, AGX Orin and an x86 edge
box) or detected for ``host``, this machine.

On this machine every profile is *emulated*: candidates are timed with the device's
thread count (at most the CPUs here) and must fit under its memory. For a device that
is not this machine, latency is *estimated* with a roofline model::

    estimate = measured here × roofline(device) / roofline(here)
    roofline(unit) = max(2·MACs / peak ops of the precision, bytes moved / memory bandwidth)

It ignores what a roofline cannot see (kernel quality per ISA, caches, clocks under
thermal load), so such figures are labelled "estimated" wherever they appear; measure on
the device (``edgeopt bench`` there) before trusting one.

Example:
    >>> profile = get_device("rpi4b")
    >>> profile.is_host, profile.cpu.cores
    (False, 4)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgeopt.core.errors import ConfigError
from edgeopt.devices.mcu import McuSpec, spec_of

PROFILES = Path(__file__).with_name("profiles.toml")
HOST = "host"


@dataclass(frozen=True)
class ComputeUnit:
    """Peak throughput of one processor of a device (GFLOPS / GOPS, GB/s)."""

    description: str
    fp32_gflops: float
    fp16_gflops: float | None = None
    int8_gops: float | None = None
    memory_gbps: float | None = None
    cores: int | None = None

    def peak(self, precision: str) -> float:
        """Peak operations per second (x1e9) at ``precision``; FP32 when the unit has no faster path."""
        rate = {"int8": self.int8_gops, "int8-dynamic": self.int8_gops, "fp16": self.fp16_gflops}.get(precision)
        return rate or self.fp32_gflops


@dataclass(frozen=True)
class DeviceProfile:
    """One device: its CPU (and GPU), memory, and the runtimes that run on it."""

    id: str
    name: str
    arch: str
    memory_mb: float
    os_reserve_mb: float
    backends: tuple[str, ...]
    cpu: ComputeUnit
    gpu: ComputeUnit | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)
    busy_watts: float | None = None  # the board's draw with its CPU busy (a published figure): energy estimates
    mcu: McuSpec | None = None  # a microcontroller: its SRAM and flash are the hard limits (edgeopt.devices.mcu)

    def __post_init__(self) -> None:
        if self.memory_mb <= self.os_reserve_mb:
            raise ConfigError(f"device {self.id}: memory_mb must exceed os_reserve_mb")
        if not self.cpu.cores or self.cpu.cores < 1:
            raise ConfigError(f"device {self.id}: cpu.cores must be a positive integer")

    @property
    def is_host(self) -> bool:
        return self.id == HOST

    @property
    def memory_cap_mb(self) -> float | None:
        """What one model process may use: the board's memory less the OS's share. None on a microcontroller,
        where no process runs: its arena and flash are judged instead (``mcu``)."""
        return None if self.mcu else self.memory_mb - self.os_reserve_mb

    def threads_here(self, host_cpus: int) -> int:
        """Intra-op threads to emulate this device with on a machine of ``host_cpus``."""
        return max(1, min(self.cpu.cores or 1, host_cpus))

    def runs(self, backend: str) -> bool:
        """Whether ``backend`` runs on this device (on this machine: any backend available here,
        plugins registered after the profile was read included)."""
        return self.is_host or backend in self.backends

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _unit(data: dict[str, Any]) -> ComputeUnit:
    return ComputeUnit(**data)


def _profile(device_id: str, data: dict[str, Any]) -> DeviceProfile:
    try:
        return DeviceProfile(
            id=device_id, name=data["name"], arch=data["arch"], memory_mb=float(data["memory_mb"]),
            os_reserve_mb=float(data["os_reserve_mb"]), backends=tuple(data["backends"]), cpu=_unit(data["cpu"]),
            gpu=_unit(data["gpu"]) if "gpu" in data else None, sources=tuple(data.get("sources", ())),
            busy_watts=float(data["busy_watts"]) if "busy_watts" in data else None,
            mcu=spec_of(data["mcu"]) if "mcu" in data else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"device profile {device_id!r} in {PROFILES} is malformed: {exc}") from None


@functools.cache
def _table() -> dict[str, DeviceProfile]:
    data = tomllib.loads(PROFILES.read_text())
    return {device_id: _profile(device_id, entry) for device_id, entry in data.items()}


def all_devices() -> list[DeviceProfile]:
    """Every known profile, this machine first."""
    return [host_profile(), *_table().values()]


def get_device(device_id: str) -> DeviceProfile:
    """The profile named ``device_id`` (``host`` is this machine, detected)."""
    if device_id == HOST:
        return host_profile()
    try:
        return _table()[device_id]
    except KeyError:
        known = ", ".join([HOST, *_table()])
        raise ConfigError(f"unknown device {device_id!r}; known devices: {known} (see `edgeopt devices`)") from None


@functools.cache
def host_profile() -> DeviceProfile:
    """This machine, detected: CPUs, memory, ISA-based peaks, measured memory bandwidth."""
    from edgeopt.backends import all_backends
    from edgeopt.devices.host import detect_cpu
    from edgeopt.measure import environment

    env = environment.collect()
    cpu, sources = detect_cpu(env)
    memory = env["memory_mb"] or 1024.0
    return DeviceProfile(
        id=HOST, name=f"this machine ({env['cpu']})", arch=env["machine"], memory_mb=memory,
        os_reserve_mb=min(1024.0, memory / 4), backends=tuple(b.name for b in all_backends() if b.unavailable_reason() is None),
        cpu=cpu, sources=tuple(sources),
    )


def roofline_s(unit: ComputeUnit, precision: str, macs: float, bytes_moved: float, threads: int | None = None) -> float:
    """Seconds the roofline model gives ``unit`` for one inference (``threads`` of its cores)."""
    share = min(threads, unit.cores) / unit.cores if threads and unit.cores else 1.0
    compute = 2.0 * macs / (unit.peak(precision) * 1e9 * share)
    memory = bytes_moved / (unit.memory_gbps * 1e9) if unit.memory_gbps else 0.0
    return max(compute, memory)


def estimate_ms(measured_ms: float, device: DeviceProfile, host: DeviceProfile, precision: str, macs: float,
                bytes_moved: float, threads_here: int) -> float:
    """Latency on ``device``'s CPU estimated from ``measured_ms`` here, by the roofline ratio."""
    here = roofline_s(host.cpu, precision, macs, bytes_moved, threads_here)
    there = roofline_s(device.cpu, precision, macs, bytes_moved)
    return measured_ms * there / here


__all__ = ["HOST", "ComputeUnit", "DeviceProfile", "all_devices", "estimate_ms", "get_device", "host_profile",
           "roofline_s"]
