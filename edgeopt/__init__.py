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

from edgeopt.api import Compressed, Trained, bench, build, distill, evaluate, export, optimize, prune, quantize, train
from edgeopt.artifact import Artifact
from edgeopt.backends import Session, all_backends, get_backend, open_session, register_backend
from edgeopt.errors import (
    ArtifactError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    EdgeoptError,
    InputError,
    ModelSourceError,
    ParityError,
)
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.record import Measurement
from edgeopt.models import LoadedModel, load_model, save_checkpoint
from edgeopt.passes import FineTune, Pass, PassConfig, PassContext, register_pass
from edgeopt.pipeline.bench import BenchConfig, BenchReport
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.quantization import QuantizationConfig
from edgeopt.search import Goals, SearchOutcome, SearchSpace
from edgeopt.spec import InputSpec, OutputSpec, Preprocess
from edgeopt.tasks import Task, get_task

__version__ = "0.2.0"

__all__ = [
    "Artifact", "ArtifactError", "BackendError", "BackendUnavailable", "BenchConfig", "BenchReport", "Compressed",
    "ConfigError", "EdgeoptError", "ExportConfig", "FineTune", "Goals", "InputError", "InputSpec", "LoadedModel",
    "Measurement", "ModelSourceError", "OutputSpec", "ParityError", "Pass", "PassConfig", "PassContext", "Preprocess",
    "QuantizationConfig", "Recipe", "SearchOutcome", "SearchSpace", "Session", "Step", "Task", "TimingConfig",
    "Trained", "all_backends", "bench", "build", "distill", "evaluate", "export", "get_backend", "get_task", "load_model",
    "open_session", "optimize", "prune", "quantize", "register_backend", "register_pass", "save_checkpoint", "train",
]
