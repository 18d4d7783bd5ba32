"""Eager PyTorch: the FP32 reference every other backend is compared with.

The artifact is an edgeopt checkpoint: weights in safetensors carrying the architecture
source and its layer widths (so pruned models rebuild); loading rebuilds the
architecture and loads the weights (no pickle involved). The architecture the manifest
names is data: it resolves only through ``edgeopt.core.trust`` (known, or granted with ``--arch``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import ConfigError
from edgeopt.core.quantization import QuantizationConfig, Validation

WEIGHTS = "weights.safetensors"


class EagerSession(Session):
    def __init__(self, module: Any, input_spec, threads: int | None) -> None:
        super().__init__(input_spec, threads)
        from edgeopt.models.sources import torch_runner

        self._runner = torch_runner(module)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._runner(batch)


class EagerBackend(Backend):
    name = "eager"
    order = 0
    capabilities = Capabilities(precisions=("fp32",), sources=("torch",), runtime_needs_torch=True)

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        from edgeopt.models.sources import save_checkpoint

        if model.arch is None:
            raise ConfigError("the eager backend needs a PyTorch model with a known architecture")
        save_checkpoint(model, folder / WEIGHTS)
        return CompileResult(entry=WEIGHTS, details={"arch": model.arch})

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        import torch

        from edgeopt.models.sources import load_model

        if threads:
            torch.set_num_threads(threads)
        module = load_model(str(artifact.entry), arch=artifact.manifest.get("compile", {}).get("arch"),
                            origin=f"the manifest of {artifact.path}").module
        return EagerSession(module.eval(), artifact.input_spec, threads)


BACKEND = EagerBackend()
