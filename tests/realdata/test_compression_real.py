"""Compression on real images (NEU steel defects, CIFAR-10) with a small CNN, in CI time.

The full ResNet-18 figures come from benchmarks/compression.py; these tests check the
same paths end to end on real data, with bounds a correct implementation meets and a
broken one (wrong calibration, unrecovered pruning, mismatched preprocessing) does not.
Skipped, with the reason, when ../shared/datasets is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.backends import open_session
from edgeopt.data import input_spec_for, load_dataset, to_input
from edgeopt.export import export
from edgeopt.measure.accuracy import evaluate
from edgeopt.models import load_model
from edgeopt.passes.train import TrainConfig, accuracy_of, fit

# EDGEOPT_DATASETS points elsewhere; by default the workplace's ../shared/datasets beside the repository
DATASETS = Path(os.environ.get("EDGEOPT_DATASETS", Path(__file__).resolve().parents[2].parent / "shared" / "datasets"))
pytestmark = pytest.mark.skipif(not (DATASETS / "neu_cls_64.npz").is_file(),
                                reason=f"real datasets not found at {DATASETS} (NEU-CLS-64, CIFAR-10)")


def trained_tiny(file: str, epochs: int):
    splits = load_dataset(str(DATASETS / file))
    spec = input_spec_for(splits.train)
    model = load_model(f"edgeopt.zoo:tiny_cnn?num_classes={len(splits.classes)}&in_channels={splits.train.channels}"
                       "&width=24", input=spec)
    model.task = "classification"
    train, val = splits.train.split(0.1, seed=0)
    torch.manual_seed(0)
    fit(model.module, train, val, spec, TrainConfig(epochs=epochs, optimizer="adamw", lr=0.005, schedule="onecycle"),
        show_progress=False)
    return model, splits


@pytest.fixture(scope="module")
def neu():
    return trained_tiny("neu_cls_64.npz", epochs=8)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_accuracy_aware_int8_on_neu_holds_the_drop_on_unseen_test_images(neu, backend, tmp_path):
    # Plain PTQ of this SiLU/Hardswish CNN agrees with FP32 on only ~78% of NEU images (ORT),
    # which is exactly the case accuracy control exists for.
    pytest.importorskip(backend)
    from edgeopt.data import quantization_data

    model, splits = neu
    fp32 = evaluate(model.reference(), splits.test, model.input_spec)["top1"]
    assert fp32 > 0.75, "the small CNN should learn NEU defects"
    calibration, validation = quantization_data(splits, 300, model, max_drop=1.0)
    artifact = export(model, backend, tmp_path / backend, "int8", calibration=calibration, validation=validation)
    int8 = evaluate(open_session(artifact.path).run, splits.test, model.input_spec)["top1"]
    assert artifact.manifest["accuracy_control"]["reached"]
    assert fp32 - int8 <= 0.03  # 1 point on validation images, a little slack on unseen test images


def test_prune_half_with_distillation_recovers_on_neu(neu):
    pytest.importorskip("torch_pruning")
    import copy

    from edgeopt.passes.distill import DistillConfig, distillation_loss
    from edgeopt.passes.prune import PruneConfig, prune_channels

    model, splits = neu
    fp32 = accuracy_of(model.module, splits.test, model.input_spec)
    student = copy.deepcopy(model.module)
    example = torch.from_numpy(model.input_spec.example())
    result = prune_channels(student, example, PruneConfig(ratio=0.5))
    train, val = splits.train.split(0.1, seed=0)
    fit(student, train, val, model.input_spec, TrainConfig(epochs=4, optimizer="adamw", lr=0.002, schedule="onecycle"),
        loss_fn=distillation_loss(model.module, DistillConfig()), show_progress=False)
    assert result.macs_reduction >= 2.0
    assert fp32 - accuracy_of(student, splits.test, model.input_spec) <= 0.05


def test_int8_ptq_on_cifar10_keeps_accuracy(tmp_path):
    pytest.importorskip("onnxruntime")
    model, splits = trained_tiny("cifar10.npz", epochs=3)
    fp32 = evaluate(model.reference(), splits.test, model.input_spec)["top1"]
    assert fp32 > 0.3
    calibration = to_input(splits.train.calibration(300).images, model.input_spec)
    artifact = export(model, "onnxruntime", tmp_path / "ort", "int8", calibration=calibration)
    int8 = evaluate(open_session(artifact.path).run, splits.test, model.input_spec)["top1"]
    assert fp32 - int8 <= 0.02
    assert np.isfinite(int8)
