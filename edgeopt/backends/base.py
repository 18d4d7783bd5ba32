"""The one interface every runtime implements: Backend (compile, load) and Session (run).

A backend module defines a ``Backend`` subclass and exposes an instance as ``BACKEND``;
the registry in ``edgeopt.backends`` finds it, so adding a runtime means adding a file
(and passing the conformance suite). Backends import their runtime library inside their
methods, never at module level, so ``import edgeopt`` stays light.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.quantization import QuantizationConfig, Validation
from edgeopt.core.spec import InputSpec

if TYPE_CHECKING:
    from edgeopt.core.artifact import Artifact
    from edgeopt.models.sources import LoadedModel

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")  # int8-dynamic: INT8 weights, activations at run time


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the pipeline asks this instead of branching on names.

    ``sources``: model kinds it compiles ("torch", "onnx"). ``runtime_needs_torch``:
    whether loading its artifacts imports torch (False is what an edge box wants).
    ``max_batch``: the largest batch a dynamic-batch artifact accepts, if bounded.
    ``int8_modes``: the ``QuantizationConfig.mode`` values its INT8 honours — "static"
    (post-training), "aware" (keeps layers in float until a ``Validation``'s max drop holds),
    "qat" (turns a QAT model's trained fake-quantizers into INT8). ``concurrent_runs``: one loaded
    session may run batches from several threads at once (a server's ``--instances``); False where a
    session holds one set of buffers (an OpenVINO infer request, an ExecuTorch method, a TensorRT context).
    ``microcontroller``: its artifacts are for a microcontroller and record the arena and flash they need.
    ``sample_by_sample``: the compiled model holds one sample (TFLite kernels are planned for one shape) and
    its session runs a batch sample by sample: any batch runs, and a fixed-batch compile would change nothing.
    """

    precisions: tuple[str, ...]
    sources: tuple[str, ...]
    runtime_needs_torch: bool
    dynamic_batch: bool = True
    max_batch: int | None = None
    options: tuple[str, ...] = field(default_factory=tuple)
    int8_modes: tuple[str, ...] = ()
    concurrent_runs: bool = False
    microcontroller: bool = False  # its artifacts record a tensor arena and flash size (edgeopt.devices.mcu)
    sample_by_sample: bool = False  # its model holds one sample and a session runs a batch one sample at a time


@dataclass
class CompileResult:
    """What ``Backend.compile`` reports back: the entry file and facts for the manifest.

    ``derived``: files that re-encode another one (a flatbuffer as C source): shipped and hashed, not
    counted again in the artifact's size.
    """

    entry: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)


class Session(ABC):
    """A loaded artifact, ready to run batches. ``run`` validates input for every backend."""

    def __init__(self, input_spec: InputSpec, threads: int | None) -> None:
        self.input_spec = input_spec
        self.threads = threads

    def run(self, inputs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Run one batch: a list with one array (or the array itself) in, output arrays out."""
        batch = self.input_spec.validate(inputs)
        return self._run(batch)

    @abstractmethod
    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a validated batch."""


class Backend(ABC):
    """A runtime: compiles a model into artifact files and loads them into a Session."""

    name: str
    order: int  # display order in tables; eager (the reference) comes first
    capabilities: Capabilities

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here (missing library or hardware), or None."""
        return None

    @abstractmethod
    def compile(self, model: "LoadedModel", precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        """Write the model's files into ``folder`` (a staging folder) for ``precision``.

        For INT8, ``quantization`` says how (its mode is one of ``int8_modes``);
        ``calibration`` is a float batch of real, preprocessed inputs (N, ...), and
        ``validation`` (mode "aware") the held-out inputs scored by the task's main metric.
        ``deadline`` (a search's budget): the long loops — calibration samples, accuracy-aware
        evaluations — check it and stop with ``BudgetExhausted``; a runtime's single calls
        (an export, a lowering) run through.
        """

    @abstractmethod
    def load(self, artifact: "Artifact", threads: int | None = None, shared_cpu: bool = False) -> Session:
        """Load a verified artifact; ``threads`` is the intra-op thread count (None: runtime default).

        ``shared_cpu``: the process shares its cores with other work (a server's event loop, a video
        decoder), so a runtime that busy-waits between runs for lower latency should not.
        """

    def profile(self, artifact: "Artifact", out_dir: Path, iters: int = 10, threads: int | None = None) -> list[dict[str, Any]]:
        """The runtime's own per-layer profile: rows of name, op_type, ms per run (slowest first)."""
        from edgeopt.core.errors import BackendError

        raise BackendError(f"{self.name} has no native per-layer profiler; profile the PyTorch model instead")


def aggregate_layers(records: list[tuple[str, str, float]], iters: int) -> list[dict[str, Any]]:
    """Sum (name, op_type, ms) records over ``iters`` runs into per-run rows, slowest first."""
    totals: dict[tuple[str, str], float] = {}
    for name, op_type, ms in records:
        totals[(name, op_type)] = totals.get((name, op_type), 0.0) + ms
    rows = [{"name": n, "op_type": t, "ms": ms / iters} for (n, t), ms in totals.items()]
    return sorted(rows, key=lambda r: r["ms"], reverse=True)


def missing_module(*modules: str) -> str | None:
    """'pip install ...' advice for the first module not importable here, else None."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module!r} is not installed (pip install 'edgeopt[{module}]')"
    return None


def float_modules(model: "LoadedModel", config: QuantizationConfig) -> list[str]:
    """PyTorch module names an INT8 compile keeps in float: a detector's head, unless the config quantizes it."""
    layers = getattr(model.module, "head_layers", None)
    return [] if config.quantize_head or not callable(layers) else list(layers())


def onnx_nodes_of(path: Path, modules: list[str]) -> list[str]:
    """The ONNX nodes that compute ``modules`` (PyTorch names): those reading the modules' own weights."""
    if not modules:
        return []
    import onnx

    prefixes = tuple(f"{m}." for m in modules)
    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if any(i.startswith(prefixes) for i in node.input)]
