"""OpenVINO on the CPU plugin: ``ov.convert_model`` to IR (xml + bin), FP32 kept as FP32.

Weights are saved uncompressed and the plugin is told to infer in f32, because by
default OpenVINO stores FP16 weights and uses bf16 on CPUs that have it; both would
silently change results that we claim are FP32. Loading imports openvino, not torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session, aggregate_layers, missing_module

MODEL = "model.xml"
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "int8": "f32"}


class OpenVinoSession(Session):
    def __init__(self, path: Path, precision: str, input_spec, threads: int | None, perf_count: bool = False) -> None:
        super().__init__(input_spec, threads)
        import openvino as ov

        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
            "PERF_COUNT": perf_count,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.request.infer({0: batch})
        return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]


class OpenVinoBackend(Backend):
    name = "openvino"
    order = 30
    capabilities = Capabilities(precisions=("fp32",), sources=("torch", "onnx"), runtime_needs_torch=False)

    def unavailable_reason(self) -> str | None:
        return missing_module("openvino")

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any]) -> CompileResult:
        import openvino as ov

        spec = model.input_spec
        shape = ov.PartialShape([-1 if spec.dynamic_batch else spec.shape[0], *spec.sample_shape])
        if model.kind == "onnx":
            ov_model = ov.convert_model(str(model.onnx_path))
            ov_model.reshape({0: shape})
        else:
            import torch

            example = torch.from_numpy(spec.example(batch=2 if spec.dynamic_batch else None))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # ov traces with torch.jit internally
                ov_model = ov.convert_model(model.module, example_input=example, input=[shape])
        ov.save_model(ov_model, str(folder / MODEL), compress_to_fp16=False)
        return CompileResult(entry=MODEL, notes=["OpenVINO IR, FP32 weights, CPU plugin"])

    def load(self, artifact, threads: int | None = None) -> Session:
        return OpenVinoSession(artifact.entry, artifact.precision, artifact.input_spec, threads)

    def profile(self, artifact, out_dir: Path, iters: int = 10, threads: int | None = None) -> list[dict[str, Any]]:
        session = OpenVinoSession(artifact.entry, artifact.precision, artifact.input_spec, threads, perf_count=True)
        batch = artifact.input_spec.example()
        records = []
        for _ in range(iters):
            session.run([batch])
            records += [
                (info.node_name, f"{info.node_type} ({info.exec_type})", info.real_time.total_seconds() * 1000.0)
                for info in session.request.get_profiling_info()
                if info.status == info.Status.EXECUTED
            ]
        return aggregate_layers(records, iters)


BACKEND = OpenVinoBackend()
