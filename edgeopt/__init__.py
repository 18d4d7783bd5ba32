"""edgeopt: make a PyTorch model fast, small and still accurate on an edge device.

The public API. Importing it loads no runtime library (no onnxruntime, openvino,
executorch, tensorrt — and no torch until a PyTorch model is resolved).

Example:
    >>> import edgeopt
    >>> model = edgeopt.load_model("torchvision:mobilenet_v2")               # doctest: +SKIP
    >>> artifact = edgeopt.export(model, "onnxruntime", "out/mbv2-ort")       # doctest: +SKIP
    >>> session = edgeopt.open_session("out/mbv2-ort", threads=2)             # doctest: +SKIP
    >>> outputs = session.run([artifact.input_spec.example()])                # doctest: +SKIP
"""

from edgeopt.artifact import Artifact
from edgeopt.backends import Session, all_backends, get_backend, open_session
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
from edgeopt.export import export
from edgeopt.measure.bench import BenchConfig, BenchReport, bench
from edgeopt.measure.latency import TimingConfig
from edgeopt.models import LoadedModel, load_model, save_checkpoint
from edgeopt.spec import InputSpec, OutputSpec, Preprocess

__version__ = "0.1.0"

__all__ = [
    "Artifact", "ArtifactError", "BackendError", "BackendUnavailable", "BenchConfig", "BenchReport",
    "ConfigError", "EdgeoptError", "InputError", "InputSpec", "LoadedModel", "ModelSourceError",
    "OutputSpec", "ParityError", "Preprocess", "Session", "TimingConfig", "all_backends", "bench",
    "export", "get_backend", "load_model", "open_session", "save_checkpoint",
]
