"""The TFLM target end to end, checked by TensorFlow Lite Micro's own interpreter and the system's C++ compiler."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from edgeopt.backends import get_backend, open_session
from edgeopt.core.errors import BackendError
from edgeopt.compile import export
from edgeopt.models.sources import load_model

pytestmark = pytest.mark.skipif(bool(get_backend("tflm").unavailable_reason()),
                                reason=f"tflm: {get_backend('tflm').unavailable_reason()}")


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    model = load_model("edgeopt.models.zoo:micro_cnn?in_channels=1&width=8", input="1x1x32x32")
    calibration = model.input_spec.example(batch=64, seed=3)
    artifact = export(model, "tflm", tmp_path_factory.mktemp("tflm") / "micro", "int8", calibration=calibration)
    return model, calibration, artifact


def test_a_relu_cnn_becomes_a_full_integer_flatbuffer_with_its_arena_found_by_tflm(micro):
    from tflite_micro import runtime

    from edgeopt.backends._tflm_probe import Probe

    _, _, artifact = micro
    record = artifact.manifest["compile"]
    data = artifact.entry.read_bytes()
    assert record["full_integer"] is True and record["flatbuffer_bytes"] == len(data) == artifact.size_bytes
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=record["arena_bytes"])
    assert interpreter.get_input_details(0)["dtype"] == np.int8 and interpreter.get_output_details(0)["dtype"] == np.int8
    with Probe(artifact.entry) as probe:  # the smallest, to 16 bytes
        assert probe.ask(record["arena_bytes"])["runs"] and not probe.ask(record["arena_bytes"] - 16)["runs"]
    assert abs(record["arena_estimate_bytes"] - record["arena_bytes"]) <= 0.10 * record["arena_bytes"]
    assert record["litert_agreement"]["max_steps"] <= 1  # TFLM's reference kernels and LiteRT's round alike
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(record["operators"])


def test_the_c_source_compiles_and_holds_the_flatbuffer_and_exactly_its_operators(micro, tmp_path):
    compiler = shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (c++) on this machine")
    _, _, artifact = micro
    obj = tmp_path / "model_data.o"
    subprocess.run([compiler, "-std=c++17", "-Wall", "-Werror", "-c", str(artifact.path / "model_data.cc"), "-o",
                    str(obj)], check=True, capture_output=True, cwd=artifact.path)
    symbols = subprocess.run(["nm", "--print-size", "-C", str(obj)], check=True, capture_output=True, text=True).stdout
    size = next(int(line.split()[1], 16) for line in symbols.splitlines() if line.endswith("g_model_data"))
    assert size == artifact.manifest["compile"]["flatbuffer_bytes"]
    header = (artifact.path / "model_data.h").read_text()
    assert f"#define EDGEOPT_TENSOR_ARENA_SIZE {artifact.manifest['compile']['arena_bytes']}" in header
    ops = (artifact.path / "model_ops.h").read_text()
    calls = sorted(line.split("resolver.")[1].split("(")[0] for line in ops.splitlines() if "resolver.Add" in line)
    from edgeopt.backends._tflite_graph import resolver_method

    assert calls == sorted(resolver_method(name) for name in artifact.manifest["compile"]["operators"])
    assert f"kEdgeoptOpCount = {len(calls)};" in ops and "AddConv2D" in calls


def test_the_artifact_runs_in_tflm_at_any_batch_and_follows_the_float_model(micro):
    model, calibration, artifact = micro
    session = open_session(artifact.path)
    outputs = session.run([calibration[:5]])[0]
    reference = model.reference()(calibration[:5])[0]
    assert outputs.shape == (5, 10)
    assert np.corrcoef(outputs.ravel(), reference.ravel())[0, 1] > 0.98


def test_an_operator_tflm_lacks_is_refused_by_name_and_nothing_is_left(tmp_path):
    model = load_model("tests.plugins.gelu_net:gelu_net", input="1x1x8x8")
    with pytest.raises(BackendError, match="TensorFlow Lite Micro has no kernel for GELU"):
        export(model, "tflm", tmp_path / "gelu", "int8", calibration=model.input_spec.example(batch=8))
    assert not (tmp_path / "gelu").exists()


def test_a_manifest_with_an_absurd_arena_is_refused_before_tflm_is_asked(micro, tmp_path):
    import json

    from edgeopt.core.artifact import Artifact

    _, _, artifact = micro
    copy = tmp_path / "copy"
    shutil.copytree(artifact.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["compile"]["arena_bytes"] = 1 << 40
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="not a size TFLM can use"):
        get_backend("tflm").load(Artifact.open(copy, verify=False))


def test_running_a_tflm_artifact_imports_no_torch(micro):
    import json
    import sys

    script = (f"import edgeopt, numpy as np, sys, json\ns = edgeopt.open_session({str(micro[2].path)!r})\n"
              "assert s.run([np.zeros((2, 1, 32, 32), np.float32)])[0].shape == (2, 10)\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "torch" not in loaded and "tflite_micro" in loaded


def test_a_damaged_flatbuffer_or_one_unlike_its_manifest_is_one_clear_error(micro, tmp_path):
    import json

    from edgeopt.backends._tflite_graph import TfliteGraph
    from edgeopt.core.artifact import Artifact

    rng = np.random.default_rng(0)
    for data in (b"\0\0\0\0TFL3" + rng.bytes(200), b"not a flatbuffer at all", b""):
        with pytest.raises(BackendError, match="flatbuffer"):
            TfliteGraph.read(data)
    _, _, artifact = micro
    for backend, change in (("tflm", "garbage"), ("litert", "garbage"), ("tflm", "shape")):
        copy = tmp_path / f"{backend}-{change}"
        shutil.copytree(artifact.path, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["backend"] = backend
        if change == "garbage":
            (copy / "model.tflite").write_bytes(b"\0\0\0\0TFL3" + rng.bytes(5000))
        else:
            manifest["input"]["shape"] = [1, 1, 16, 16]
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(BackendError, match="export it again"):
            get_backend(backend).load(Artifact.open(copy, verify=False))

