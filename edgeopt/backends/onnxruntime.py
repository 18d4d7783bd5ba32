"""ONNX Runtime (CPU execution provider) on an ONNX file from the dynamo exporter.

Loading an artifact imports onnxruntime and numpy only, never torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends._onnx_export import write_onnx
from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session, aggregate_layers, missing_module

MODEL = "model.onnx"


class OnnxRuntimeSession(Session):
    def __init__(self, path: Path, input_spec, threads: int | None, profile_prefix: Path | None = None) -> None:
        super().__init__(input_spec, threads)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_name = self.session.get_inputs()[0].name

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self._input_name: batch})


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    order = 20
    capabilities = Capabilities(precisions=("fp32",), sources=("torch", "onnx"), runtime_needs_torch=False)

    def unavailable_reason(self) -> str | None:
        return missing_module("onnxruntime", "onnx")

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any]) -> CompileResult:
        write_onnx(model, folder / MODEL)
        return CompileResult(entry=MODEL, notes=["ONNX opset from the dynamo exporter, CPUExecutionProvider"])

    def load(self, artifact, threads: int | None = None) -> Session:
        return OnnxRuntimeSession(artifact.entry, artifact.input_spec, threads)

    def profile(self, artifact, out_dir: Path, iters: int = 10, threads: int | None = None) -> list[dict[str, Any]]:
        out_dir.mkdir(parents=True, exist_ok=True)
        session = OnnxRuntimeSession(artifact.entry, artifact.input_spec, threads, profile_prefix=out_dir / "onnxruntime")
        batch = artifact.input_spec.example()
        for _ in range(iters):
            session.run([batch])
        trace = Path(session.session.end_profiling())
        records = [
            (e["name"].removesuffix("_kernel_time"), e["args"].get("op_name", ""), e["dur"] / 1000.0)
            for e in json.loads(trace.read_text())
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        ]
        return aggregate_layers(records, iters)


BACKEND = OnnxRuntimeBackend()
