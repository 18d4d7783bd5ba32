"""PyTorch to a LiteRT (TFLite) flatbuffer through litert-torch, FP32 or full-integer INT8 — no TensorFlow.

INT8 is PT2E post-training quantization with litert-torch's own quantizer (symmetric, per-channel
weights, int8 activations), calibrated on real samples; the converter then writes every tensor,
the input and the output included, as int8 with its scale and zero point. The model is exported
with ``strict=True``: only then does ``torch.export`` record which Python operation made each node,
which the quantizer's patterns match on (a residual ``out += identity`` otherwise stays in float,
wrapped in dequantize/quantize pairs that a microcontroller would run in float).

The flatbuffer holds one sample (batch 1): TFLite kernels are planned for a fixed shape, and the
sessions run a batch one sample at a time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.backends.base import float_modules, missing_module
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import BackendError, first_line
from edgeopt.core.quantization import QuantizationConfig

if TYPE_CHECKING:
    from edgeopt.models.sources import LoadedModel


PACKAGES = (("ai_edge_litert", "litert"), ("litert_torch", "litert-export"))  # (module, the extra that installs it)


def missing_package(packages: tuple[tuple[str, str], ...] = PACKAGES) -> str | None:
    """'pip install ...' advice for the first of ``packages`` not importable here, else None."""
    for module, extra in packages:
        if missing_module(module):
            return f"the Python package {module!r} is not installed (pip install 'edgeopt[{extra}]')"
    return None


def to_tflite(model: "LoadedModel", precision: str, quantization: QuantizationConfig | None = None,
              calibration: np.ndarray | None = None, deadline: Deadline = NO_DEADLINE) -> tuple[bytes, list[str]]:
    """The flatbuffer of ``model`` for one input (batch 1), and notes for the manifest."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its rich console would print every conversion stage
    import litert_torch
    import torch

    keep_float = (quantization.keep_float + tuple(float_modules(model, quantization))) if quantization else ()
    if keep_float:
        raise BackendError("LiteRT's PT2E quantizer cannot keep chosen layers in float (asked: "
                           f"{', '.join(keep_float)}); quantize every layer (a detector: --quantize-head) or use openvino")
    example = torch.from_numpy(model.input_spec.example(batch=1))  # its own dtype and sample shape
    module = model.module.eval()
    if precision == "fp32":
        return litert_torch.convert(module, (example,)).model_content(), ["FP32 through litert-torch"]
    quantized, config = _quantize_pt2e(module, example, calibration, deadline)
    converted = litert_torch.convert(quantized, (example,), quant_config=config)
    return converted.model_content(), [f"PT2E INT8 (litert-torch's quantizer: symmetric per-channel "
                                       f"weights, int8 activations; int8 input and output) on {len(calibration)} "
                                       "calibration samples"]


def _quantize_pt2e(module, example, calibration: np.ndarray, deadline: Deadline):
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    try:
        exported = torch.export.export(module, (example,), strict=True).module()
    except Exception as exc:  # noqa: BLE001 - dynamo's many errors: name the cause, then the way out
        raise BackendError(f"torch.export (strict) could not trace the model for LiteRT INT8: {first_line(exc)[:300]}") from exc
    prepared = move_exported_model_to_eval(prepare_pt2e(exported, quantizer))  # observers see eval-mode BatchNorm
    with torch.no_grad():
        for index, sample in enumerate(calibration):
            deadline.check("calibration samples", index, len(calibration))
            prepared(torch.from_numpy(np.ascontiguousarray(sample[None])))
    converted = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    # An exported module refuses .eval(); its graph is in eval form already (above), so only the flag that
    # litert-torch reads (it warns of a model "converted in training mode") is set, as nn.Module itself sets it.
    torch.nn.Module.train(converted, False)
    return converted, QuantConfig(pt2e_quantizer=quantizer)

