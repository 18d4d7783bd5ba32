"""ExecuTorch with the XNNPACK delegate: ``torch.export`` -> lower to XNNPACK -> ``.pte``.

The batch dimension is exported dynamic up to ``MAX_BATCH`` (XNNPACK needs a bound).
The Python runtime that runs a ``.pte`` here takes torch tensors, so loading imports
torch; on a device the same file runs under the C++ runtime without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session, missing_module
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.quantization import QuantizationConfig, Validation

MODEL = "model.pte"
# ExecuTorch 1.5.1's runtime refused inputs above 15 samples whatever bound the batch Dim was
# exported with (64 and 100 tried: "Attempted to resize a bounded tensor"), so 15 is the bound
# edgeopt declares; tests/conformance runs every backend at its declared bound.
MAX_BATCH = 15


def quantize_pt2e_xnnpack(exported, calibration: np.ndarray, keep_float: tuple[str, ...] = (),
                          deadline: Deadline = NO_DEADLINE):
    """PT2E post-training INT8 for XNNPACK: prepare, calibrate on real samples, convert.

    ``keep_float`` names PyTorch modules (e.g. ``layer4.1.conv2``) the quantizer leaves in float.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    for name in keep_float:
        quantizer.set_module_name(name, None)
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for index, sample in enumerate(calibration):
            deadline.check("calibration samples", index, len(calibration))
            prepared(torch.from_numpy(np.ascontiguousarray(sample[None])))
    return convert_pt2e(prepared)


class ExecuTorchSession(Session):
    def __init__(self, path: Path, input_spec, threads: int | None) -> None:
        super().__init__(input_spec, threads)
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if threads:
            # XNNPACK's threadpool is process-wide; resetting it is how the runtime sizes it.
            portable_lib._unsafe_reset_threadpool(threads)
        self.method = Runtime.get().load_program(str(path)).load_method("forward")

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        import torch

        outputs = self.method.execute([torch.from_numpy(batch)])
        return [o.numpy() for o in outputs]


class ExecuTorchBackend(Backend):
    name = "executorch"
    order = 40
    capabilities = Capabilities(
        precisions=("fp32", "int8"), sources=("torch",), runtime_needs_torch=True, max_batch=MAX_BATCH,
        int8_modes=("static",),
    )

    def unavailable_reason(self) -> str | None:
        return missing_module("executorch")

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        spec = model.input_spec
        example = torch.from_numpy(spec.example(batch=2 if spec.dynamic_batch else None))
        dynamic = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if spec.dynamic_batch else None
        exported = torch.export.export(model.module.eval(), (example,), dynamic_shapes=dynamic)
        notes = []
        if precision == "int8":
            keep_float = (quantization or QuantizationConfig()).keep_float
            quantized = quantize_pt2e_xnnpack(exported, calibration, keep_float, deadline)
            exported = torch.export.export(quantized, (example,), dynamic_shapes=dynamic)
            notes.append(f"PT2E INT8 with the XNNPACK quantizer (symmetric, per-channel) on "
                         f"{len(calibration)} calibration samples"
                         + (f"; kept in float as asked: {', '.join(keep_float)}" if keep_float else ""))
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
        (folder / MODEL).write_bytes(program.buffer)
        batches = f"batch up to {MAX_BATCH}" if spec.dynamic_batch else f"fixed batch {spec.shape[0]}"
        return CompileResult(entry=MODEL, notes=notes + [f"XNNPACK delegate, {batches}"])

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        return ExecuTorchSession(artifact.entry, artifact.input_spec, threads)


BACKEND = ExecuTorchBackend()
