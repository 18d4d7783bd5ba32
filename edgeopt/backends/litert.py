"""LiteRT (TensorFlow Lite) through litert-torch: a ``.tflite`` flatbuffer, FP32 or full-integer INT8.

Exporting needs ``edgeopt[litert-export]`` (litert-torch and torch); running needs only
``edgeopt[litert]`` (the ``ai-edge-litert`` interpreter, no torch, no TensorFlow): the same
file runs on a Raspberry Pi, an Android phone or a Coral board's CPU. An INT8 artifact takes
and gives int8 tensors; its session quantizes the float input with the input's scale and zero
point and dequantizes the outputs, so callers see floats like every other backend.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends._litert_convert import PACKAGES, missing_package, to_tflite
from edgeopt.backends._tflite_graph import checked_graph
from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import BackendError, BackendUnavailable, first_line
from edgeopt.core.quantization import QuantizationConfig, Validation

MODEL = "model.tflite"


def to_integer(batch: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """A float batch as the tensor an input of ``dtype`` holds: quantized (rounded half away from zero, as
    TFLite's own Quantize, then saturated) when it has a scale, else only cast."""
    dtype = np.dtype(dtype)
    if scale <= 0 or dtype.kind not in "iu":
        return batch.astype(dtype)
    info = np.iinfo(dtype)
    scaled = batch / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def to_float(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """An output as the float values it stands for: dequantized when it has a scale, else only cast."""
    if scale <= 0 or values.dtype.kind not in "iu":
        return values.astype(np.float32)
    return ((values.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


class OneSampleSession(Session):
    """A session whose model holds one sample (TFLite kernels are planned for one shape): a batch runs sample by
    sample through ``_run_one``."""

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        results = [self._run_one(sample[None]) for sample in batch]
        return [np.concatenate(parts) for parts in zip(*results)]

    @abstractmethod
    def _run_one(self, sample: np.ndarray) -> list[np.ndarray]:
        """Run one sample (a batch of one)."""


class LiteRTSession(OneSampleSession):
    def __init__(self, path: Path, input_spec, threads: int | None) -> None:
        super().__init__(input_spec, threads)
        from ai_edge_litert.interpreter import Interpreter

        data = path.read_bytes()
        checked_graph(data, input_spec)  # one clear error for a file that is not what its manifest says
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"LiteRT could not load {path.name} ({first_line(exc)[:200]}); export it again") from None
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()

    def _run_one(self, sample: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], to_integer(sample, self.input["dtype"], *self.input["quantization"]))
        self.interpreter.invoke()
        return [to_float(self.interpreter.get_tensor(detail["index"]), *detail["quantization"]) for detail in self.outputs]


class LiteRTBackend(Backend):
    name = "litert"
    order = 45
    capabilities = Capabilities(precisions=("fp32", "int8"), sources=("torch",), runtime_needs_torch=False,
                                int8_modes=("static",), sample_by_sample=True)

    def unavailable_reason(self) -> str | None:
        return missing_package()

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        data, notes = to_tflite(model, precision, quantization, calibration, deadline)
        (folder / MODEL).write_bytes(data)
        return CompileResult(entry=MODEL, notes=notes + ["one sample per invocation: a batch runs sample by sample"])

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        reason = missing_package(PACKAGES[:1])  # running needs the interpreter only
        if reason:
            raise BackendUnavailable(f"litert artifacts cannot run here: {reason}")
        return LiteRTSession(artifact.entry, artifact.input_spec, threads)


BACKEND = LiteRTBackend()
