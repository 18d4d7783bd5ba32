"""INT8 post-training quantization on every backend that offers it, calibrated on real digits."""

from __future__ import annotations

import pytest

from edgeopt.backends import all_backends, open_session
from edgeopt.compile import export, unsupported_reason
from edgeopt.core.errors import ConfigError
from edgeopt.models.sources import load_model
from edgeopt.pipeline.builder import quantization_data
from edgeopt.core.quantization import QuantizationConfig
from edgeopt.tasks import get_task
from tests.helpers import backend_param, evaluate

TASK = get_task("classification")


def aware(model, splits, max_drop=1.0):
    """(calibration, Validation) for accuracy-aware INT8, held out of the training split as the CLI does."""
    config = QuantizationConfig(mode="aware", max_drop=max_drop, calibration_samples=200)
    return config, *quantization_data(splits, TASK, model, config)


def int8_backends():
    probe = load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x8x8")
    return [backend_param(backend.name, unsupported_reason(backend, probe, "int8"))
            for backend in all_backends() if "static" in backend.capabilities.int8_modes]


@pytest.mark.parametrize("backend", int8_backends())
def test_int8_keeps_accuracy_and_records_parity(backend, trained_digits, tmp_path):
    model, splits, calibration, fp32 = trained_digits
    artifact = export(model, backend, tmp_path / backend, precision="int8", calibration=calibration)
    assert artifact.precision == "int8" and artifact.parity["passed"]
    assert artifact.parity["probe_batch"] == 32 and artifact.parity["top1_agreement"] >= 0.9
    assert any("200 calibration samples" in note for note in artifact.manifest["notes"])
    report = evaluate(open_session(artifact.path).run, splits.test, artifact.input_spec, reference=model)
    assert report["top1"] >= fp32 - 0.04, (report["top1"], fp32)
    assert report["top1_agreement"] >= 0.93


@pytest.mark.parametrize("backend", int8_backends())
def test_int8_without_calibration_is_refused(backend, trained_digits, tmp_path):
    with pytest.raises(ConfigError, match="calibration"):
        export(trained_digits[0], backend, tmp_path / "x", precision="int8")
    assert not (tmp_path / "x").exists()


def aware_backends():
    return [p for p in int8_backends() if "aware" in all_backends_by_name()[p.id].capabilities.int8_modes]


def all_backends_by_name():
    return {b.name: b for b in all_backends()}


@pytest.mark.parametrize("backend", aware_backends())
def test_accuracy_aware_int8_records_whether_the_drop_holds(backend, trained_digits, tmp_path):
    model, splits, _, _ = trained_digits
    config, calibration, validation = aware(model, splits)
    artifact = export(model, backend, tmp_path / "aware", precision="int8", quantization=config,
                      calibration=calibration, validation=validation)
    control = artifact.manifest["accuracy_control"]
    assert control["samples"] == validation.samples and control["max_drop_points"] == 1.0
    assert control["metric"] == "top1" and artifact.manifest["quantization"]["mode"] == "aware"
    assert control["drop_points"] == pytest.approx(100 * (control["reference"] - control["value"]))
    assert control["reached"] == (control["drop_points"] <= 1.0)
    assert any("accuracy-aware" in note for note in artifact.manifest["notes"])


@pytest.mark.parametrize("backend", aware_backends())
def test_an_unreachable_drop_ranks_over_the_whole_validation_set_and_keeps_the_best(backend, trained_digits, tmp_path):
    # -50: INT8 would have to beat FP32 by 50 points, so the accuracy control always ranks and reverts layers;
    # its ranking scores subsets of the validation set (NNCF's default subset is the calibration size, 200,
    # below the 287 held-out digits), which a fast CPU whose first INT8 model met 1 point never reached
    model, splits, _, _ = trained_digits
    config, calibration, validation = aware(model, splits, max_drop=-50.0)
    assert validation.samples > config.calibration_samples
    artifact = export(model, backend, tmp_path / "aware", precision="int8", quantization=config,
                      calibration=calibration, validation=validation)
    control = artifact.manifest["accuracy_control"]
    assert control["reached"] is False and control["samples"] == validation.samples
    assert artifact.parity["passed"]


@pytest.mark.parametrize("backend", [p for p in int8_backends() if p not in aware_backends()])
def test_max_drop_is_refused_where_not_supported(backend, trained_digits, tmp_path):
    model, splits, _, _ = trained_digits
    config, calibration, validation = aware(model, splits)
    with pytest.raises(ConfigError, match="has no 'aware' INT8"):
        export(model, backend, tmp_path / backend, precision="int8", quantization=config, calibration=calibration,
               validation=validation)
    assert not (tmp_path / backend).exists()


def test_unreachable_drop_bisects_over_ranked_nodes_calibrates_once_and_keeps_the_best(trained_digits, tmp_path,
                                                                                         monkeypatch):
    import importlib

    from edgeopt.backends._sensitivity import max_evaluations
    from edgeopt.backends.onnxruntime import BACKEND as ORT

    if ORT.unavailable_reason():
        pytest.skip(f"onnxruntime: {ORT.unavailable_reason()}")
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not its function
    calibrations = []
    create = ort_quantize.create_calibrator
    monkeypatch.setattr(ort_quantize, "create_calibrator", lambda *a, **k: calibrations.append(1) or create(*a, **k))
    model, splits, _, _ = trained_digits
    # -50: INT8 would have to beat FP32 by 50 points, which no candidate can.
    config, calibration, validation = aware(model, splits, max_drop=-50.0)
    artifact = export(model, "onnxruntime", tmp_path / "ort", precision="int8", quantization=config,
                      calibration=calibration, validation=validation)
    details, control = artifact.manifest["compile"], artifact.manifest["accuracy_control"]
    assert control["reached"] is False and details["reached"] is False
    assert any("cannot reach the max drop of -50 points of top1" in note for note in artifact.manifest["notes"])
    noise = [entry["added_noise"] for entry in details["sensitivity_ranking"]]
    assert noise == sorted(noise, reverse=True) and noise[0] > 0  # ranked once, by the noise each node adds
    steps = details["search"]
    assert steps[0]["kept_in_float"] == 0 and steps[-1]["kept_in_float"] == len(noise)  # all INT8, ..., all float
    assert details["evaluations"] == len(steps) <= max_evaluations(len(noise))  # a bisection, not a walk
    assert len(calibrations) == 1  # every variant reused the one calibration's ranges
    best = max(step["score"] for step in steps)
    assert control["value"] == pytest.approx(best)  # the saved artifact is the best candidate found
    assert open_session(artifact.path).run([calibration[:2]])[0].shape == (2, 10)


# -- quantization-aware training --------------------------------------------------------
def qat_backends():
    return [backend_param(b.name, b.unavailable_reason()) for b in all_backends() if "qat" in b.capabilities.int8_modes]


@pytest.fixture(scope="module")
def qat_model(trained_digits):
    pytest.importorskip("nncf")
    from edgeopt.passes.qat import prepare_qat
    from edgeopt.passes.train import TrainConfig, Validator, fit

    model, splits, calibration, _ = trained_digits
    qat = prepare_qat(model, calibration)
    train, val = splits.train.split(0.1, seed=0)
    fit(qat.module, train, val, qat.input_spec, TrainConfig(epochs=1, lr=1e-3, augment=False), TASK.training_loss(),
        Validator(TASK, val, qat.input_spec), show_progress=False)
    return qat


@pytest.mark.parametrize("backend", qat_backends())
def test_qat_model_becomes_real_int8_that_matches_its_fake_quant_training(backend, qat_model, trained_digits, tmp_path):
    _, splits, calibration, fp32 = trained_digits
    artifact = export(qat_model, backend, tmp_path / backend, "int8", calibration=calibration)
    assert artifact.precision == "int8"
    assert any("quantization-aware training" in note for note in artifact.manifest["notes"])
    if backend == "onnxruntime":
        import onnx

        ops = {node.op_type for node in onnx.load(str(artifact.entry)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    metrics = evaluate(open_session(artifact.path).run, splits.test, qat_model.input_spec, reference=qat_model)
    assert metrics["top1_agreement"] >= 0.97  # the artifact runs what training simulated
    assert fp32 - metrics["top1"] <= 0.03


def test_backends_without_qat_conversion_refuse_a_qat_model_clearly(qat_model, tmp_path):
    from edgeopt.core.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="cannot convert a quantization-aware-trained model"):
        export(qat_model, "eager", tmp_path / "eager")
    with pytest.raises(BackendUnavailable, match="a quantization-aware-trained model exports as int8"):
        export(qat_model, "onnxruntime", tmp_path / "ort", "fp32")


def test_dynamic_int8_quantizes_linear_layers_without_calibration(tmp_path):
    pytest.importorskip("onnxruntime")
    model = load_model("edgeopt.models.zoo:mlp?hidden=64&in_features=32", input="1x32")
    artifact = export(model, "onnxruntime", tmp_path / "dyn", "int8-dynamic")
    assert "MatMulInteger" in artifact.manifest["compile"]["quantized_ops"]
    assert artifact.manifest["parity"]["passed"] and artifact.size_bytes < 0.5 * (32 * 64 + 64 * 64 + 64 * 10) * 4


def test_dynamic_int8_on_a_cnn_says_static_int8_is_the_one_to_use(tmp_path):
    pytest.importorskip("onnxruntime")
    artifact = export(load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x16x16"), "onnxruntime", tmp_path / "dyn",
                      "int8-dynamic")
    assert any("use static int8" in note for note in artifact.manifest["notes"])


def test_the_noise_ranking_pairs_float_and_int8_tensors_by_node(tmp_path):
    """ONNX Runtime folds a ReLU into the node before it (whose output then takes the ReLU's name
    but holds the pre-ReLU values) and renames a graph output: pairing tensors by name compared a
    convolution's pre-ReLU INT8 output with the post-ReLU FP32 one (noise ratio ~1) and gave the
    last layer no pair (noise 0)."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeopt.backends._onnx_export import write_onnx
    from edgeopt.backends.onnxruntime import quantize_static_int8, quantized_nodes, rank_nodes
    from edgeopt.models.sources import LoadedModel
    from edgeopt.core.spec import InputSpec

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10)).eval()
    model = LoadedModel("seq", InputSpec((1, 3, 8, 8)), module=module, task="classification")
    write_onnx(model, tmp_path / "fp32.onnx")
    quant_pre_process(str(tmp_path / "fp32.onnx"), str(tmp_path / "prepared.onnx"))
    inputs = np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)
    quantize_static_int8(tmp_path / "prepared.onnx", tmp_path / "int8.onnx", inputs, QuantizationConfig())
    ranking = rank_nodes(tmp_path / "prepared.onnx", tmp_path / "int8.onnx", inputs[:8], tmp_path)
    assert [e["node"] for e in ranking] != [] and {e["node"] for e in ranking} == set(quantized_nodes(tmp_path / "int8.onnx"))
    # INT8 noise of a few per mille at most: a pre-/post-ReLU mix-up would read about 1
    assert all(0 <= e["added_noise"] < 0.05 for e in ranking), ranking
    # every node, the last (whose output is the graph's) too, was compared: each amplifies or damps noise
    assert all(e["noise_gain"] > 0 for e in ranking), ranking
