"""TorchScript: trace, freeze, and optionally optimize for mobile / the lite interpreter.

Options: ``mobile`` (run ``optimize_for_mobile``; needs a PyTorch build with XNNPACK,
which the x86 CUDA wheels lack) and ``lite`` (save for the lite interpreter, as
PyTorch Mobile loads it).

A TorchScript artifact is a program: loading one runs code from its archive. So ``load`` takes
one only when the user passed ``--trust-model``, or when this process compiled it itself
(``edgeopt.core.trust.made_program``) — never because it sits in a folder, a bundle or a repository.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.artifact import sha256_of
from edgeopt.backends.base import Backend, Capabilities, CompileResult, Session
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import BackendUnavailable
from edgeopt.core.quantization import QuantizationConfig, Validation
from edgeopt.core.trust import made_program, require_programs

DEPRECATION_NOTE = (
    "TorchScript is deprecated upstream (PyTorch 2.14 warns on trace/freeze/save); "
    "prefer executorch for mobile and onnxruntime/openvino for servers"
)


def xnnpack_in_torch() -> bool:
    """Whether this PyTorch build has XNNPACK (optimize_for_mobile needs it)."""
    import torch.backends.xnnpack

    return bool(torch.backends.xnnpack.enabled)


class TorchScriptSession(Session):
    def __init__(self, module: Any, input_spec, threads: int | None) -> None:
        super().__init__(input_spec, threads)
        from edgeopt.models.sources import torch_runner

        self._runner = torch_runner(module)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._runner(batch)


class TorchScriptBackend(Backend):
    name = "torchscript"
    order = 10
    capabilities = Capabilities(
        precisions=("fp32",), sources=("torch",), runtime_needs_torch=True, options=("mobile", "lite")
    )

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        import torch

        example = torch.from_numpy(model.input_spec.example(batch=2))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # said once, in the manifest's notes
            traced = torch.jit.trace(model.module.eval(), example, check_trace=False)
            frozen = torch.jit.freeze(traced)
        notes = ["traced and frozen", DEPRECATION_NOTE]
        if options.get("mobile"):
            from torch.utils.mobile_optimizer import optimize_for_mobile

            if not xnnpack_in_torch():
                raise BackendUnavailable(
                    "optimize_for_mobile needs a PyTorch build with XNNPACK, and this one has none; "
                    "drop --option mobile, or use the executorch backend (XNNPACK) instead"
                )
            frozen = optimize_for_mobile(frozen)
            notes.append("optimized for mobile")
        if options.get("lite"):
            entry = "model.ptl"
            frozen._save_for_lite_interpreter(str(folder / entry))
            notes.append("saved for the lite interpreter")
        else:
            entry = "model.pt"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.save(frozen, str(folder / entry))
        made_program(sha256_of(folder / entry))  # ours: bench and the search load it in this run unasked
        return CompileResult(entry=entry, notes=notes, details={"lite": bool(options.get("lite"))})

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        require_programs(f"{artifact.path} is a TorchScript artifact", sha256_of(artifact.entry))
        import torch

        if threads:
            torch.set_num_threads(threads)
        if artifact.manifest["compile"].get("lite"):
            from torch.jit.mobile import _load_for_lite_interpreter

            module = _load_for_lite_interpreter(str(artifact.entry))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(artifact.entry), map_location="cpu")
        return TorchScriptSession(module, artifact.input_spec, threads)


BACKEND = TorchScriptBackend()
