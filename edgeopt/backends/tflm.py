"""TensorFlow Lite Micro: an INT8 flatbuffer and the C++ a microcontroller project compiles, checked by TFLM itself.

The flatbuffer is LiteRT's full-integer INT8 (``_litert_convert``). Compiling runs it in the real
TFLM interpreter on the host (the ``tflite-micro`` package, the same C++ that runs on the device
with reference kernels): an operator TFLM lacks is refused by name, the smallest tensor arena that
works is found by bisection (asked of a child process: TFLM can crash where it should fail, see
``_tflm_probe``), and its outputs are compared with the LiteRT interpreter's. Beside the
flatbuffer the artifact holds ``model_data.cc/.h`` and ``model_ops.h`` (``_tflm_source``).

The manifest's ``compile`` record says what a microcontroller needs: ``arena_bytes`` (measured),
``arena_estimate_bytes`` (the static estimate of ``_tflite_graph``, made before any interpreter ran),
``flatbuffer_bytes``, the operators and the multiply-accumulates. Loading runs the artifact in the
TFLM interpreter with that arena, without torch: what the host measures is TFLM's reference kernels
on this CPU, not the microcontroller's speed (``edgeopt.devices.mcu`` estimates that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends._litert_convert import PACKAGES, missing_package, to_tflite
from edgeopt.backends._tflite_graph import TfliteGraph, checked_graph
from edgeopt.backends._tflm_probe import ANSWER_S, Probe, interpreter
from edgeopt.backends._tflm_source import write_sources
from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session
from edgeopt.backends.litert import OneSampleSession, to_float, to_integer
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import BackendError, BackendUnavailable
from edgeopt.core.quantization import QuantizationConfig, Validation

MODEL = "model.tflite"
MAX_ARENA = 1 << 30  # no microcontroller has a GiB of SRAM: a search past it is given up
ARENA_SLACK = 4  # a manifest's arena may exceed the static estimate this many times (never more, whatever it says)
COMPARE_SAMPLES = 8  # calibration samples run through both TFLM and LiteRT at compile time


def _refuse_hung(answer: dict[str, Any]) -> None:
    """A probe that failed for a reason other than the arena: one clear error, not a wrong arena."""
    if answer.get("error"):
        raise BackendError(f"the TFLM probe process failed ({answer['error'][-300:]}); check the tflite-micro install")
    if answer["timed_out"]:
        raise BackendError("TensorFlow Lite Micro did not finish one run of the model in "
                           f"{ANSWER_S:.0f} s (a loop that never ends?); deploy with litert instead")


def check_operators(probe: Probe, estimate: int) -> None:
    """Refuse, by name, an operator TFLM has no kernel for (TFLM's own registry decides), asked at four times the
    static arena ``estimate``. Any other failure at that size is left to the arena search, which grows the arena."""
    answer = probe.ask(max(4 * estimate, 1 << 16))
    _refuse_hung(answer)
    if answer["missing"]:
        raise BackendError(f"TensorFlow Lite Micro has no kernel for {', '.join(answer['missing'])}: replace the layer "
                           f"that makes it (GELU -> ReLU or Hardswish, say) or deploy with litert instead")


def smallest_arena(probe: Probe, hint: int, deadline: Deadline = NO_DEADLINE) -> int:
    """The smallest arena (to 16 bytes) TFLM runs the model in, by bisection from the static estimate.

    A size at which TFLM crashes (see ``_tflm_probe``) counts as one it does not run in.
    """
    low, high = 0, max(hint, 1024)
    while not _runs(probe, high):
        low, high = high, 2 * high
        if high > MAX_ARENA:
            raise BackendError(f"TensorFlow Lite Micro did not run the model in {MAX_ARENA >> 20} MiB of arena")
    step = 0
    while high - low > 16:
        deadline.check("arena search", step, 64)
        middle = (low + high) // 2 // 16 * 16
        low, high = (low, middle) if _runs(probe, middle) else (middle, high)
        step += 1
    return high


def _runs(probe: Probe, arena: int) -> bool:
    answer = probe.ask(arena)
    _refuse_hung(answer)
    return answer["runs"]


def _agreement(data: bytes, arena: int, samples: np.ndarray) -> dict[str, Any]:
    """TFLM's int8 outputs against LiteRT's on the same int8 inputs: steps of the output's scale."""
    from ai_edge_litert.interpreter import Interpreter

    litert = Interpreter(model_content=data)
    litert.allocate_tensors()
    source, sink = litert.get_input_details()[0], litert.get_output_details()[0]
    steps = []
    micro = interpreter(data, arena)  # the probe ran it at this arena: no failure left to report
    for sample in samples:
        value = to_integer(sample[None], source["dtype"], *source["quantization"])
        litert.set_tensor(source["index"], value)
        litert.invoke()
        micro.set_input(value, 0)
        micro.invoke()
        steps.append(np.abs(litert.get_tensor(sink["index"]).astype(np.int32) - micro.get_output(0).astype(np.int32)))
    diff = np.concatenate([s.ravel() for s in steps])
    return {"samples": len(samples), "max_steps": int(diff.max()), "identical": float(np.mean(diff == 0))}


class MicroSession(OneSampleSession):
    """One sample at a time in the TFLM interpreter, with the arena the manifest records."""

    def __init__(self, path: Path, input_spec, threads: int | None, arena: int) -> None:
        super().__init__(input_spec, threads)
        data = path.read_bytes()
        graph = checked_graph(data, input_spec)
        estimate = graph.arena_estimate()
        if arena > ARENA_SLACK * estimate:
            raise BackendError(f"the manifest's arena of {arena} bytes is over {ARENA_SLACK}x what {path.name} needs by "
                               f"its own tensors ({estimate}); export it again")
        with Probe(path) as probe:  # first in a child process: TFLM can crash, or never finish, where it should fail
            answer = probe.ask(arena)
        if not answer["runs"]:
            why = ("it crashed" if answer["crashed"] else "it did not finish" if answer["timed_out"]
                   else "; ".join(answer["stderr"][-2:]) or "no reason given")
            raise BackendError(f"TensorFlow Lite Micro cannot run {path.name} in the {arena} bytes of arena its manifest "
                               f"records ({why}); export it again")
        self.interpreter = interpreter(data, arena)
        self.input = self.interpreter.get_input_details(0)
        self.outputs = [self.interpreter.get_output_details(i) for i in range(len(graph.outputs))]

    def _run_one(self, sample: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_input(to_integer(sample, self.input["dtype"], *_scale(self.input)), 0)
        self.interpreter.invoke()
        return [to_float(np.array(self.interpreter.get_output(i)), *_scale(detail))
                for i, detail in enumerate(self.outputs)]


def _scale(detail: dict[str, Any]) -> tuple[float, int]:
    """(scale, zero point) of a TFLM tensor; (0, 0) when it has none (a float or plain integer tensor)."""
    params = detail.get("quantization_parameters") or {}
    scales, zero_points = params.get("scales"), params.get("zero_points")
    if scales is None or len(scales) == 0:
        return 0.0, 0
    return float(scales[0]), int(zero_points[0]) if zero_points is not None and len(zero_points) else 0


class MicroBackend(Backend):
    name = "tflm"
    order = 46
    capabilities = Capabilities(precisions=("int8",), sources=("torch",), runtime_needs_torch=False,
                                int8_modes=("static",), microcontroller=True, sample_by_sample=True)

    def unavailable_reason(self) -> str | None:
        return missing_package((("tflite_micro", "tflm"), *PACKAGES))

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        data, notes = to_tflite(model, "int8", quantization, calibration, deadline)
        graph = TfliteGraph.read(data)
        estimate = graph.arena_estimate()
        (folder / MODEL).write_bytes(data)
        with Probe(folder / MODEL) as probe:
            check_operators(probe, estimate)
            deadline.check("finding the arena")
            arena = smallest_arena(probe, estimate, deadline)
        if arena > ARENA_SLACK * estimate:  # a load would refuse it: say so now, honestly
            raise BackendError(f"TFLM needs a {arena}-byte arena, over {ARENA_SLACK}x the static estimate from the "
                               f"model's tensors ({estimate}): an operator with scratch memory edgeopt "
                               "does not model; deploy with litert")
        derived = write_sources(folder, data, graph, arena)
        floats = graph.float_operators()
        if floats:
            notes.append(f"not full-integer: {', '.join(floats)} run in float (the quantizer has no int8 pattern for "
                         "them, e.g. SiLU); a part without an FPU runs them slowly — ReLU, ReLU6 and Hardswish stay int8")
        details = {"arena_bytes": arena, "arena_estimate_bytes": estimate,
                   "activation_bytes": graph.activation_bytes(), "persistent_estimate_bytes": graph.persistent_bytes(),
                   "flatbuffer_bytes": len(data), "operators": graph.operator_names, "macs": graph.macs(),
                   "full_integer": not floats, "litert_agreement": _agreement(data, arena, calibration[:COMPARE_SAMPLES])}
        notes.append(f"TFLM arena {arena} bytes measured (static estimate {estimate}); "
                     f"C sources {', '.join(derived)}")
        return CompileResult(entry=MODEL, notes=notes, details=details, derived=derived)

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        reason = missing_package((("tflite_micro", "tflm-runtime"), ("ai_edge_litert", "tflm-runtime")))
        if reason:
            raise BackendUnavailable(f"tflm artifacts cannot run here: {reason}")
        arena = (artifact.manifest.get("compile") or {}).get("arena_bytes")
        if not isinstance(arena, int) or isinstance(arena, bool) or not 0 < arena <= MAX_ARENA:
            raise BackendError(f"the manifest's arena size {arena!r} is not a size TFLM can use; export it again")
        return MicroSession(artifact.entry, artifact.input_spec, threads, arena)


BACKEND = MicroBackend()
