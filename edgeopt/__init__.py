"""edgeopt: make a PyTorch model fast, small and still accurate on an edge device.

The public API. Importing it loads no runtime library (no onnxruntime, openvino,
executorch, tensorrt — and no torch until a PyTorch model is resolved). Every command
of the CLI is a function here (``train``, ``prune``, ``distill``, ``quantize``,
``optimize``, ``build``, ``bench``, ``export``), with the same defaults.

Example:
    >>> import edgeopt
    >>> artifact = edgeopt.export("torchvision:mobilenet_v2", "onnxruntime", "out/mbv2-ort")   # doctest: +SKIP
    >>> session = edgeopt.open_session("out/mbv2-ort", threads=2)                             # doctest: +SKIP
    >>> outputs = session.run([artifact.input_spec.example()])                                # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. Imported on first use (PEP 562), so `import edgeopt` — and a
# torch-free `edgeopt serve` on a small box — pays only for what it touches.
_HOMES = {
    "edgeopt.api": ("Adapted", "Compressed", "Federated", "Trained", "adapt_batchnorm", "bench", "build", "distill", "early_exits", "evaluate",
                    "export", "federate", "ladder", "optimize", "prune", "quantize", "train"),
    "edgeopt.federated.settings": ("FederationSettings", "SiteSettings"),
    "edgeopt.core.artifact": ("Artifact",),
    "edgeopt.backends": ("Session", "all_backends", "get_backend", "open_session", "register_backend"),
    "edgeopt.core.errors": ("ArtifactError", "BackendError", "BackendUnavailable", "ConfigError", "EdgeoptError",
                       "InputError", "ModelSourceError", "ParityError"),
    "edgeopt.measure.latency": ("TimingConfig",),
    "edgeopt.measure.measurement": ("Measurement",),
    "edgeopt.models.sources": ("LoadedModel", "load_model", "save_checkpoint"),
    "edgeopt.passes": ("FineTune", "Pass", "PassConfig", "PassContext", "TrainConfig", "register_pass"),
    "edgeopt.passes.distill": ("DistillConfig",),
    "edgeopt.passes.prune": ("PruneConfig",),
    "edgeopt.passes.qat": ("QatConfig",),
    "edgeopt.passes.sparsify": ("SparsifyConfig",),
    "edgeopt.pipeline.bench": ("BenchConfig", "BenchReport"),
    "edgeopt.pipeline.recipe": ("ExportConfig", "Recipe", "Step"),
    "edgeopt.core.quantization": ("QuantizationConfig",),
    "edgeopt.search": ("AgentTarget", "ClusterConfig", "Goals", "SearchOutcome", "SearchSpace"),
    "edgeopt.core.spec": ("InputSpec", "OutputSpec", "Preprocess"),
    "edgeopt.tasks": ("Metric", "Task", "get_task", "register_task", "task_of"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME_OF])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from edgeopt.api import (Adapted, Compressed, Federated, Trained, adapt_batchnorm, bench, build, distill, early_exits,  # noqa: F401
                             evaluate, export, federate, ladder, optimize, prune, quantize, train)
    from edgeopt.federated.settings import FederationSettings, SiteSettings  # noqa: F401
    from edgeopt.core.artifact import Artifact  # noqa: F401
    from edgeopt.backends import Session, all_backends, get_backend, open_session, register_backend  # noqa: F401
    from edgeopt.core.errors import (ArtifactError, BackendError, BackendUnavailable, ConfigError,  # noqa: F401
                                EdgeoptError, InputError, ModelSourceError, ParityError)
    from edgeopt.measure.latency import TimingConfig  # noqa: F401
    from edgeopt.measure.measurement import Measurement  # noqa: F401
    from edgeopt.models.sources import LoadedModel, load_model, save_checkpoint  # noqa: F401
    from edgeopt.passes import FineTune, Pass, PassConfig, PassContext, TrainConfig, register_pass  # noqa: F401
    from edgeopt.passes.distill import DistillConfig  # noqa: F401
    from edgeopt.passes.prune import PruneConfig  # noqa: F401
    from edgeopt.passes.qat import QatConfig  # noqa: F401
    from edgeopt.passes.sparsify import SparsifyConfig  # noqa: F401
    from edgeopt.pipeline.bench import BenchConfig, BenchReport  # noqa: F401
    from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step  # noqa: F401
    from edgeopt.core.quantization import QuantizationConfig  # noqa: F401
    from edgeopt.search import AgentTarget, ClusterConfig, Goals, SearchOutcome, SearchSpace  # noqa: F401
    from edgeopt.core.spec import InputSpec, OutputSpec, Preprocess  # noqa: F401
    from edgeopt.tasks import Metric, Task, get_task, register_task, task_of  # noqa: F401

__version__ = "0.2.0"

__all__ = sorted(_HOME_OF)  # the public names are the ones with a home above
