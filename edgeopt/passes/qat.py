"""Quantization-aware training with NNCF: fake-quantize, fine-tune, convert to INT8.

``prepare_qat`` runs NNCF post-training quantization on the PyTorch module, which
inserts trainable fake-quantizers initialised from the calibration statistics; the
shared training loop then fine-tunes weights and quantizer ranges together (the
guide's recipe: a few epochs at a small learning rate). The result is a LoadedModel
marked ``quantized``: INT8 backends convert its fake-quantizers into real INT8
(OpenVINO reads them as FakeQuantize; ONNX Runtime gets QuantizeLinear/DequantizeLinear
after ``nncf.strip``) instead of quantizing again.

NNCF compiles a small C++ extension for its quantizer kernels on first use (about a
minute, cached under ~/.cache/torch_extensions), so the load timeout is raised.

Example:
    >>> qat = prepare_qat(model, calibration)                         # doctest: +SKIP
    >>> fit(qat.module, train, val, qat.input_spec, TrainConfig(epochs=2, lr=1e-3))  # doctest: +SKIP
    >>> export(qat, "openvino", "out/ov-qat", precision="int8", calibration=calibration)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.models import LoadedModel

DEFAULT_EPOCHS, DEFAULT_LR = 3, 1e-3
EXTENSION_TIMEOUT_S = "900"  # NNCF's first-use C++ build is slow on small machines


def prepare_qat(model: LoadedModel, calibration: np.ndarray, preset: str = "performance") -> LoadedModel:
    """A copy of ``model`` whose module carries NNCF fake-quantizers, ready to fine-tune."""
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", EXTENSION_TIMEOUT_S)
    import copy

    import nncf
    import torch

    if model.module is None:
        raise ConfigError("quantization-aware training needs a PyTorch model, not an ONNX file")
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    if preset not in presets:
        raise ConfigError(f"preset must be one of {sorted(presets)}, not {preset!r}")
    samples = model.input_spec.validate(np.asarray(calibration))
    dataset = nncf.Dataset([torch.from_numpy(sample[None]) for sample in samples])
    module = nncf.quantize(copy.deepcopy(model.module).eval(), dataset, preset=presets[preset],
                           subset_size=len(samples))
    return dataclasses.replace(model, module=module, quantized=True)


def onnx_ready(module, example):
    """The QAT module with NNCF's quantizers as native torch fake-quantize ops (export to Q/DQ)."""
    import nncf

    return nncf.strip(module, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)
