"""Quantization-aware training with NNCF: fake-quantize, fine-tune, and let the backend convert.

NNCF's post-training quantization on the PyTorch module inserts trainable fake-quantizers
initialised from calibration statistics; the shared fine-tune then trains weights and
quantizer ranges together (the guide's recipe: a few epochs at a small learning rate).
The result is a LoadedModel marked ``quantized``: INT8 backends with the "qat" mode
convert its fake-quantizers into real INT8 (OpenVINO reads them as FakeQuantize; ONNX
Runtime gets QuantizeLinear/DequantizeLinear) instead of quantizing again.

NNCF compiles a small C++ extension for its quantizer kernels on first use (about a
minute, cached under ~/.cache/torch_extensions), so the load timeout is raised.

Example:
    >>> qat = PASS.apply(model, QatConfig(), context)                          # doctest: +SKIP
    >>> export(qat, "openvino", "out/ov-qat", "int8", calibration=calibration)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeopt.core.errors import ConfigError
from edgeopt.passes.base import (
    FIRST,
    LAST,
    FineTune,
    Pass,
    PassConfig,
    PassContext,
    SearchRequest,
    SearchStep,
    epochs_label,
)
from edgeopt.passes.finetune import fine_tune
from edgeopt.core.quantization import PRESETS, nncf_preset

if TYPE_CHECKING:
    from edgeopt.models.sources import LoadedModel

EXTENSION_TIMEOUT_S = "900"  # NNCF's first-use C++ build is slow on small machines
QAT_FINE_TUNE = FineTune(epochs=3, lr=1e-3, optimizer="sgd", schedule="cosine", weight_decay=5e-4, distill=False)


@dataclass(frozen=True)
class QatConfig(PassConfig):
    preset: str = "performance"
    calibration_samples: int = 300
    fine_tune: FineTune = field(default_factory=lambda: QAT_FINE_TUNE)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"the quantization preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if self.calibration_samples < 1:
            raise ConfigError("QAT needs calibration samples to initialise its quantizers")


class QatPass(Pass):
    name = "qat"
    config_type = QatConfig
    quantizes = True
    cached = False

    def apply(self, model: "LoadedModel", config: QatConfig, context: PassContext) -> "LoadedModel":
        prepared = prepare_qat(model, context.calibration(model, config.calibration_samples), config.preset)
        fine_tune(prepared.module, prepared.input_spec, config.fine_tune, context)
        return prepared

    def label(self, config: QatConfig) -> str:
        return f"QAT{epochs_label(config)}"

    def search_steps(self, request: SearchRequest) -> list[SearchStep]:
        """QAT for the space's ``qat_epochs`` when the space allows it (``qat``): first when accuracy
        is the priority, last when latency is; not when memory is (INT8 PTQ already shrinks the model)."""
        space = request.space
        if not space.qat or request.priority == "memory":
            return []
        config = self.config(calibration_samples=space.calibration_samples, fine_tune={"epochs": space.qat_epochs})
        return [SearchStep(config, FIRST if request.priority == "accuracy" else LAST)]

    def untrained(self, config: QatConfig) -> None:
        return None  # fake-quantizers do not change the architecture a latency probe times


def prepare_qat(model: "LoadedModel", calibration, preset: str = "performance") -> "LoadedModel":
    """A copy of ``model`` whose module carries NNCF fake-quantizers, ready to fine-tune."""
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", EXTENSION_TIMEOUT_S)
    import nncf
    import numpy as np
    import torch

    if model.module is None:
        raise ConfigError("quantization-aware training needs a PyTorch model, not an ONNX file")
    samples = model.input_spec.validate(np.asarray(calibration))
    dataset = nncf.Dataset([torch.from_numpy(sample[None]) for sample in samples])
    module = nncf.quantize(copy.deepcopy(model.module).eval(), dataset, preset=nncf_preset(preset),
                           subset_size=len(samples))
    return dataclasses.replace(model, module=module, quantized=True)


PASS = QatPass()
