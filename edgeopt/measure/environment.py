"""The environment a measurement was taken in: CPU, ISA flags, cores, memory, versions.

Read from /proc and package metadata only; nothing heavy is imported.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from edgeopt.core.artifact import installed_versions

# ISA features that decide which kernels runtimes pick (VNNI/AMX for INT8, bf16, NEON dot).
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve",
)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return info
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in info:
            info[key.strip()] = value.strip()
    return info


def _memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cpu_count() -> int:
    """CPUs this process may run on (honours affinity and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def collect() -> dict[str, Any]:
    """A JSON-ready record of this machine and the libraries installed."""
    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    return {
        "cpu": cpu.get("model name") or cpu.get("Hardware") or platform.processor() or "unknown",
        "machine": platform.machine(),
        "isa_flags": [f for f in ISA_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cpu_count(),
        "memory_mb": _memory_total_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": installed_versions(),
    }
