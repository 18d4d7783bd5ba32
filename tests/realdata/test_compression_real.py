"""Compression on real images (NEU steel defects, CIFAR-10) with a small CNN, in CI time.

The full ResNet-18 figures come from benchmarks/compression.py; these tests take the same
library path (the recipe builder behind `edgeopt quantize` and `edgeopt prune`) end to end
on real data, with bounds a correct implementation meets and a broken one (wrong
calibration, unrecovered pruning, mismatched preprocessing) does not. Skipped, with the
reason, when ../shared/datasets is absent.
"""

from __future__ import annotations

import pytest
import torch

import edgeopt
from edgeopt.tasks.classification.data import input_spec_for, load_dataset
from edgeopt.models.sources import load_model, save_checkpoint
from edgeopt.passes.train import TrainConfig, Validator, fit
from edgeopt.tasks import get_task
from tests.helpers import DATASETS

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DATASETS / "neu_cls_64.npz").is_file(),
                                 reason=f"real datasets not found at {DATASETS} (NEU-CLS-64, CIFAR-10)")]
TASK = get_task("classification")


def trained_tiny(file: str, epochs: int, folder):
    """A small CNN trained on ``file`` and saved as a checkpoint: (path, test top-1)."""
    splits = load_dataset(str(DATASETS / file))
    spec = input_spec_for(splits.train)
    model = load_model(f"edgeopt.models.zoo:tiny_cnn?num_classes={len(splits.classes)}&in_channels={splits.train.channels}"
                       "&width=24", input=spec)
    model.task, model.labels = TASK.name, list(splits.classes)
    train, val = splits.train.split(0.1, seed=0)
    torch.manual_seed(0)
    fit(model.module, train, val, spec, TrainConfig(epochs=epochs, optimizer="adamw", lr=0.005, schedule="onecycle"),
        TASK.training_loss(), Validator(TASK, val, spec), show_progress=False)
    return save_checkpoint(model, folder / f"{file}.safetensors")


@pytest.fixture(scope="module")
def neu(tmp_path_factory):
    return trained_tiny("neu_cls_64.npz", epochs=8, folder=tmp_path_factory.mktemp("neu"))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_accuracy_aware_int8_on_neu_holds_the_drop_on_unseen_test_images(neu, backend, tmp_path):
    # Plain PTQ of this SiLU/Hardswish CNN agrees with FP32 on only ~78% of NEU images (ORT),
    # which is exactly the case accuracy control exists for.
    pytest.importorskip(backend)
    result = edgeopt.quantize(str(neu), str(DATASETS / "neu_cls_64.npz"), backend, tmp_path / backend,
                              edgeopt.QuantizationConfig(mode="aware", max_drop=1.0), progress=False)
    fp32, int8 = result.before.metrics["top1"], result.after.metrics["top1"]
    assert fp32 > 0.75, "the small CNN should learn NEU defects"
    assert result.artifact.manifest["accuracy_control"]["reached"]
    assert fp32 - int8 <= 0.03  # 1 point on validation images, a little slack on unseen test images


def test_prune_half_with_distillation_recovers_on_neu(neu, tmp_path):
    pytest.importorskip("torch_pruning")
    from edgeopt.passes.prune import PruneConfig

    config = PruneConfig(ratio=0.5, fine_tune=edgeopt.FineTune(epochs=4, lr=0.002))
    result = edgeopt.prune(str(neu), str(DATASETS / "neu_cls_64.npz"), tmp_path / "p50.safetensors", config,
                           progress=False)
    assert result.before.macs / result.after.macs >= 2.0
    assert result.before.metrics["top1"] - result.after.metrics["top1"] <= 0.05


def test_int8_ptq_on_cifar10_keeps_accuracy(tmp_path):
    pytest.importorskip("onnxruntime")
    checkpoint = trained_tiny("cifar10.npz", epochs=3, folder=tmp_path)
    result = edgeopt.quantize(str(checkpoint), str(DATASETS / "cifar10.npz"), "onnxruntime", tmp_path / "ort",
                              progress=False)
    assert result.before.metrics["top1"] > 0.3
    assert result.before.metrics["top1"] - result.after.metrics["top1"] <= 0.02
