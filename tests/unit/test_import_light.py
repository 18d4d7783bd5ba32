"""``import edgeopt`` stays light, and serving an artifact of a backend that says it needs no torch imports none."""

import json
import subprocess
import sys

import pytest

import edgeopt
from edgeopt.agent.identity import AGENT_BACKENDS
from edgeopt.backends import get_backend
from tests.helpers import backend_params

HEAVY = ("onnxruntime", "openvino", "executorch", "tensorrt", "ai_edge_litert", "litert_torch", "tflite_micro")


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_edgeopt_imports_no_runtime():
    loaded = _modules_after("import edgeopt")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "torch" not in loaded


@pytest.mark.parametrize("backend", [p for p in backend_params() if not get_backend(p.id).capabilities.runtime_needs_torch])
def test_running_an_artifact_of_a_torch_free_runtime_imports_no_torch(backend, artifact_cache):
    path = artifact_cache(backend).path
    loaded = _modules_after(
        "import edgeopt, numpy as np\n"
        f"s = edgeopt.open_session({str(path)!r}, threads=1)\n"
        "assert s.run([np.zeros((2, 3, 32, 32), np.float32)])[0].shape == (2, 10)"
    )
    assert "torch" not in loaded
    assert AGENT_BACKENDS[backend].split(".")[0] in loaded  # it ran on its own runtime


def test_public_api_is_documented_and_exists():
    for name in edgeopt.__all__:
        obj = getattr(edgeopt, name)
        assert obj.__doc__, f"edgeopt.{name} has no docstring"
