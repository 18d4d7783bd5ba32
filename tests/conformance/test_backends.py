"""The conformance suite: every available backend runs the same cases on the tiny CNN.

The tiny CNN has a residual add, depthwise conv, concat, BatchNorm, SiLU and Hardswish.
A new backend file is picked up here automatically.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.backends import get_backend, open_session
from edgeopt.core.errors import InputError
from edgeopt.measure.fidelity import TOLERANCES, compare
from edgeopt.tasks import get_task
from tests.helpers import backend_params

CLASSIFIER = get_task("classification")  # the tiny CNN's outputs are logits: FP32 must keep every top-1

BACKENDS = backend_params()


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_records_parity_within_fp32_tolerance(backend, artifact_cache):
    artifact = artifact_cache(backend)
    parity = artifact.parity
    assert parity["passed"] is True
    assert parity["max_abs_diff"] <= TOLERANCES["fp32"].max_abs_diff
    assert parity["top1_agreement"] == 1.0
    assert artifact.manifest["backend"] == backend
    assert artifact.manifest["input"]["shape"] == [1, 3, 32, 32]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_reloaded_artifact_matches_reference_at_any_batch(backend, batch, artifact_cache, tiny_model):
    artifact = artifact_cache(backend)
    session = open_session(artifact.path, threads=1)
    data = tiny_model.input_spec.example(batch=batch, seed=7)
    outputs = session.run([data])
    assert outputs[0].shape == (batch, 10)
    parity = compare(tiny_model.reference()(data), outputs, "fp32", CLASSIFIER)
    assert parity["passed"], parity


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_input_shape_is_one_clear_error(backend, artifact_cache):
    session = open_session(artifact_cache(backend).path)
    with pytest.raises(InputError, match=r"has shape 1x3x31x32, the model expects Nx3x32x32"):
        session.run([np.zeros((1, 3, 31, 32), np.float32)])
    with pytest.raises(InputError, match="NaN"):
        session.run([np.full((1, 3, 32, 32), np.nan, np.float32)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_at_the_runtime_bound_runs_and_above_it_is_refused_clearly(backend, artifact_cache):
    artifact = artifact_cache(backend)
    bound = get_backend(backend).capabilities.max_batch
    if bound is None:
        pytest.skip(f"{backend} has no batch bound")
    session = open_session(artifact.path)
    assert session.run([np.zeros((bound, 3, 32, 32), np.float32)])[0].shape == (bound, 10)  # the bound itself runs
    with pytest.raises(InputError, match=f"at most {bound}"):
        session.run([np.zeros((bound + 1, 3, 32, 32), np.float32)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_reshape_is_dynamic_or_falls_back_to_fixed_batch_with_a_note(backend, tmp_path):
    from edgeopt.compile import export
    from edgeopt.models.sources import load_model

    model = load_model("edgeopt.models.zoo:tiny_cnn?shuffle=true", input="1x3x32x32")
    artifact = export(model, backend, tmp_path / backend)
    session = open_session(artifact.path)
    batches = (1, 3) if artifact.input_spec.dynamic_batch else (1,)
    if not artifact.input_spec.dynamic_batch:
        assert any("built for fixed batch 1" in note for note in artifact.manifest["notes"])
        with pytest.raises(InputError, match="batch 1 only"):
            session.run([model.input_spec.example(batch=2)])
    for batch in batches:
        data = model.input_spec.example(batch=batch, seed=3)
        assert compare(model.reference()(data), session.run([data]), "fp32", CLASSIFIER)["passed"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_onnx_file_source_on_backends_that_take_onnx(backend, tmp_path, tiny_model):
    import torch

    from edgeopt.compile import export
    from edgeopt.models.sources import load_model

    if "onnx" not in get_backend(backend).capabilities.sources:
        pytest.skip(f"{backend} takes PyTorch models only")
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(tiny_model.module, (torch.zeros(2, 3, 32, 32),), path, dynamo=True, verbose=False,
                      external_data=False, input_names=["pixels"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    source = load_model(str(path))
    artifact = export(source, backend, tmp_path / backend)
    assert artifact.parity["passed"] and artifact.manifest["source"] == str(path)
    data = source.input_spec.example(batch=3, seed=5)
    outputs = open_session(artifact.path).run([data])
    assert compare(tiny_model.reference()(data), outputs, "fp32", CLASSIFIER)["passed"]
