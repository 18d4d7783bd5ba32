"""This machine's CPU as a ComputeUnit: peaks from its ISA and clock, bandwidth measured.

The peaks are computed the same way as the profiles' (cores × clock × operations per
cycle), so the roofline ratio between a device and this machine compares like with
like. Memory bandwidth is measured with a large NumPy copy, because no data sheet
describes a shared cloud VM; it is the one measured figure and is labelled so.
"""

from __future__ import annotations

import time
from typing import Any

from edgeopt.devices import ComputeUnit

# FP32 FLOP per cycle per core of the widest FMA the ISA flags promise (two FMA pipes).
FLOPS_PER_CYCLE = (("avx512f", 64), ("fma", 32), ("avx", 16), ("asimd", 16), ("sse4_2", 8))
# INT8 throughput relative to FP32: VNNI/AMX and Arm dot product 4x, plain AVX2/NEON 2x.
INT8_FACTOR = (("amx_int8", 4), ("avx512_vnni", 4), ("avx_vnni", 4), ("asimddp", 4), ("avx2", 2), ("asimd", 2))


def _clock_ghz(cpu: dict[str, str]) -> float:
    for key in ("cpu MHz", "CPU MHz"):
        if cpu.get(key):
            try:
                return float(cpu[key]) / 1000.0
            except ValueError:
                pass
    return 2.0  # unknown clock: a typical server base clock, said so in the sources


def memory_bandwidth_gbps(megabytes: int = 256, repeats: int = 3) -> float:
    """Copy bandwidth (read + write) of a ``megabytes`` NumPy array, best of ``repeats``."""
    import numpy as np

    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best / 1e9


def detect_cpu(env: dict[str, Any]) -> tuple[ComputeUnit, list[str]]:
    """(this CPU as a ComputeUnit, where each figure came from)."""
    from edgeopt.measure.environment import _cpuinfo

    info = _cpuinfo()
    flags = set(env["isa_flags"])
    cores = env["usable_cpus"]
    ghz = _clock_ghz(info)
    per_cycle = next((n for flag, n in FLOPS_PER_CYCLE if flag in flags), 8)
    int8 = next((n for flag, n in INT8_FACTOR if flag in flags), 1)
    fp16 = 2 if {"avx512_fp16", "asimdhp"} & flags else 1
    fp32 = cores * ghz * per_cycle
    bandwidth = memory_bandwidth_gbps()
    unit = ComputeUnit(description=f"{cores}x {env['cpu']} @ {ghz:.2f} GHz", fp32_gflops=fp32,
                       fp16_gflops=fp32 * fp16, int8_gops=fp32 * int8, memory_gbps=round(bandwidth, 1), cores=cores)
    sources = [
        f"/proc/cpuinfo: {cores} usable CPUs at {ghz:.2f} GHz; ISA {', '.join(sorted(flags)) or 'unknown'}",
        f"{per_cycle} FP32 FLOP/cycle/core from the widest FMA flag; INT8 {int8}x FP32, FP16 {fp16}x",
        f"memory bandwidth measured here (NumPy copy of 256 MB): {bandwidth:.1f} GB/s",
    ]
    return unit, sources
