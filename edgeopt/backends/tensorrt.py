"""TensorRT: ONNX -> serialized engine (FP32 or FP16) with a dynamic-batch profile.

Needs the ``tensorrt`` package and an NVIDIA GPU; elsewhere it reports why it is
unavailable instead of failing. Device buffers are torch CUDA tensors, so loading
imports torch. An engine is specific to the GPU and TensorRT version that built it.

An engine can carry plugin libraries that TensorRT loads with it, and NVIDIA treats engine files as
trusted input: so, like TorchScript, an engine loads only with ``--trust-model`` or when this
process built it (``edgeopt.core.trust``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.artifact import sha256_of
from edgeopt.backends._onnx_export import write_onnx
from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session, missing_module
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import BackendError
from edgeopt.core.quantization import QuantizationConfig, Validation
from edgeopt.core.trust import made_program, require_programs

ENGINE = "model.engine"
MAX_BATCH = 32
WORKSPACE_BYTES = 1 << 30


def _nvidia_gpu_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


class TensorRtSession(Session):
    def __init__(self, path: Path, input_spec, threads: int | None) -> None:
        super().__init__(input_spec, threads)
        import tensorrt as trt
        import torch

        self._torch = torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {path}; engines only run on the GPU and TensorRT version that built them")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if n != self.input_name]
        self.stream = torch.cuda.Stream()

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        device_input = torch.from_numpy(batch).cuda()
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        self.context.set_tensor_address(self.input_name, device_input.data_ptr())
        outputs = []
        for name in self.output_names:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return [o.cpu().numpy() for o in outputs]


class TensorRtBackend(Backend):
    name = "tensorrt"
    order = 50
    capabilities = Capabilities(
        precisions=("fp32", "fp16"), sources=("torch", "onnx"), runtime_needs_torch=True, max_batch=MAX_BATCH
    )

    def unavailable_reason(self) -> str | None:
        reasons = []
        missing = missing_module("tensorrt")
        if missing:
            reasons.append(missing)
        if not _nvidia_gpu_present():
            reasons.append("no NVIDIA GPU was found")
        return "; ".join(reasons) or None

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        import tensorrt as trt

        onnx_path = folder / "model.onnx"
        write_onnx(model, onnx_path)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT could not parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        spec = model.input_spec
        profile = builder.create_optimization_profile()
        one = (1, *spec.sample_shape)
        most = (MAX_BATCH if spec.dynamic_batch else spec.shape[0], *spec.sample_shape)
        profile.set_shape(network.get_input(0).name, one if spec.dynamic_batch else most, one if spec.dynamic_batch else most, most)
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BackendError("TensorRT failed to build an engine (see its log above)")
        (folder / ENGINE).write_bytes(bytes(engine))
        made_program(sha256_of(folder / ENGINE))  # ours: this run loads it unasked
        onnx_path.unlink()
        return CompileResult(entry=ENGINE, notes=[f"TensorRT {trt.__version__} {precision} engine, batch 1..{most[0]}"])

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        require_programs(f"{artifact.path} is a TensorRT engine (it may carry plugin libraries)",
                         sha256_of(artifact.entry))
        return TensorRtSession(artifact.entry, artifact.input_spec, threads)


BACKEND = TensorRtBackend()
