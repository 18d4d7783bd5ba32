"""A microcontroller's budgets — SRAM for the tensor arena, flash for the model and the runtime — and its speed.

On a microcontroller the hard limits are bytes: an arena one byte larger than the SRAM the
application can give it, or a flatbuffer plus runtime larger than the flash, does not run.
``McuSpec`` holds a part's figures (read from ``profiles.toml``, a ``[<device>.mcu]`` table) and
judges a TFLM artifact's measured arena and flash against them.

Latency there is an **estimate**, never a measurement, and says its basis: the model's
multiply-accumulates divided by what the part's int8 kernels sustain per cycle
(``int8_macs_per_cycle``, an assumption per core given in the profile's sources), times the
clock; the interval spans half to twice that rate. Flash is the flatbuffer plus the TFLM
runtime, estimated as ``RUNTIME_CORE_KB`` plus ``RUNTIME_KERNEL_KB`` per operator kind linked.

Example:
    >>> part = McuSpec(core="Cortex-M7", clock_mhz=480, sram_kb=512, flash_kb=2048, int8_macs_per_cycle=1.0)
    >>> round(part.estimate_ms(4_800_000)[0], 1)
    10.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeopt.core.errors import ConfigError

# TFLM's runtime in flash: its interpreter, allocator and planner, then one kernel per operator kind linked
# through the op resolver. Published figures put a build at "approximately 20-50 KB of flash depending on the
# number of registered operators" (applied-ee.github.io, TensorFlow Lite Micro); these constants reproduce that
# range for 0-10 operator kinds. An estimate: the compiler, its flags and CMSIS-NN move it.
RUNTIME_CORE_KB = 20.0
RUNTIME_KERNEL_KB = 3.0
RATE_SPREAD = 2.0  # the interval of a latency estimate: the assumed MACs per cycle halved and doubled
KB = 1024


@dataclass(frozen=True)
class McuSpec:
    """One part: its core and clock, the SRAM an arena may take, its flash, and the int8 rate assumed."""

    core: str
    clock_mhz: float
    sram_kb: float  # the part's SRAM (its largest contiguous block, where smaller): firmware needs a share of it
    flash_kb: float
    int8_macs_per_cycle: float
    fpu: bool = True

    def __post_init__(self) -> None:
        for name in ("clock_mhz", "sram_kb", "flash_kb", "int8_macs_per_cycle"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"a microcontroller's {name} must be positive; got {getattr(self, name)!r}")

    def estimate_ms(self, macs: int) -> tuple[float, float, float]:
        """(estimate, low, high) in ms for ``macs`` multiply-accumulates (see the module docstring)."""
        cycles = macs / self.int8_macs_per_cycle
        centre = cycles / (self.clock_mhz * 1e3)
        return centre, centre / RATE_SPREAD, centre * RATE_SPREAD

    @property
    def basis(self) -> str:
        return (f"estimated: MACs / ({self.int8_macs_per_cycle:g} MAC per cycle assumed for int8 kernels on "
                f"{self.core}) / {self.clock_mhz:g} MHz; the interval spans half to twice that rate")


def runtime_flash_kb(operator_kinds: int) -> float:
    """The TFLM runtime's flash for a model using ``operator_kinds`` kinds of operator (an estimate)."""
    return RUNTIME_CORE_KB + RUNTIME_KERNEL_KB * operator_kinds


def footprint_kb(compile_record: dict[str, Any]) -> tuple[float, float] | None:
    """(arena KB measured by TFLM, flash KB: flatbuffer + runtime) from a TFLM artifact's ``compile`` record;
    None for an artifact of any other runtime."""
    arena, flatbuffer = compile_record.get("arena_bytes"), compile_record.get("flatbuffer_bytes")
    if not isinstance(arena, int) or not isinstance(flatbuffer, int):
        return None
    return arena / KB, flatbuffer / KB + runtime_flash_kb(len(compile_record.get("operators") or ()))


def spec_of(data: dict[str, Any]) -> McuSpec:
    """An ``McuSpec`` from a profile's ``mcu`` table."""
    return McuSpec(core=str(data["core"]), clock_mhz=float(data["clock_mhz"]), sram_kb=float(data["sram_kb"]),
                   flash_kb=float(data["flash_kb"]), int8_macs_per_cycle=float(data["int8_macs_per_cycle"]),
                   fpu=bool(data.get("fpu", True)))
