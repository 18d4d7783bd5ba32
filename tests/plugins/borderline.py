"""A classifier with many borderline predictions, and data for it: INT8 flips them without costing accuracy.

Images are 2x2 grayscale. A "clean" image of class c lights pixel c: its logit wins by a
wide margin. A "borderline" image (label 0) lights pixel 3, which feeds classes 1 and 2
almost equally (2.000 against 2.005): FP32 predicts 2, and INT8's rounding of the weights
makes the two equal, so it predicts 1. Both are wrong, so accuracy does not move while
top-1 agreement with FP32 falls to the share of clean images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeopt.models.sources import load_model, save_checkpoint
from edgeopt.core.spec import InputSpec, Preprocess

SPEC = InputSpec((1, 1, 2, 2), preprocess=Preprocess(mean=(0.0,), std=(1.0,), channels="GRAY"))


def build() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 2.0], [0, 0, 5.0, 2.005]]))
        model[1].bias.zero_()
    return model.eval()


def images(count: int, borderline_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    borderline = rng.random(count) < borderline_share
    pixels = np.zeros((count, 4), np.uint8)
    pixels[np.arange(count), np.where(borderline, 3, labels)] = 255
    return pixels.reshape(count, 2, 2), np.where(borderline, 0, labels).astype(np.int64)


def write(folder: Path, borderline_share: float = 0.4) -> tuple[Path, Path]:
    """(checkpoint, dataset .npz) in ``folder``."""
    model = load_model(f"{__name__}:build", input=SPEC)
    model.task, model.labels = "classification", ["0", "1", "2"]
    checkpoint = save_checkpoint(model, folder / "borderline.safetensors")
    x_train, y_train = images(600, borderline_share, seed=0)
    x_test, y_test = images(300, borderline_share, seed=1)
    data = folder / "borderline.npz"
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=np.array(["0", "1", "2"]))
    return checkpoint, data
