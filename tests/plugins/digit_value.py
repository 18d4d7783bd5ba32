"""A task that lives outside edgeopt: regression — read the value (0..9) of a handwritten digit.

Importing this module registers the task (``--plugin tests.plugins.digit_value``); nothing in
edgeopt/ knows about it. It brings what a task owns: its data (scikit-learn's digits, each image
labelled with its value as a number), its metric (mean absolute error, lower is better), its
loss, its batches, and what one image's output means (a value, shown as JSON and drawn).
It imports no torch at module level: a torch-free server loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.core.errors import ConfigError
from edgeopt.tasks import Metric, Task, register_task


@dataclass(frozen=True)
class ValueDataset:
    """uint8 NHWC images, each with a float target."""

    images: np.ndarray
    targets: np.ndarray
    classes: tuple[str, ...] = ("value",)  # one output

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices) -> "ValueDataset":
        indices = np.asarray(indices, np.int64)
        return ValueDataset(self.images[indices], self.targets[indices])

    def split(self, fraction: float, seed: int) -> tuple["ValueDataset", "ValueDataset"]:
        order = np.random.default_rng(seed).permutation(len(self))
        cut = max(1, round(len(self) * fraction))
        return self.subset(order[cut:]), self.subset(order[:cut])

    def stratified_indices(self, count: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).permutation(len(self))[:count]

    def calibration(self, count: int = 300, seed: int = 0) -> "ValueDataset":
        return self.subset(self.stratified_indices(count, seed))


@dataclass(frozen=True)
class Splits:
    train: ValueDataset
    test: ValueDataset
    source: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


@dataclass(frozen=True)
class Value:
    """One image's result: the value read."""

    value: float


class ValueBatches:
    def __init__(self, dataset: ValueDataset, spec) -> None:
        import torch

        from edgeopt.images import to_input

        self.inputs = torch.from_numpy(to_input(dataset.images, spec))
        self.targets = torch.from_numpy(dataset.targets.astype(np.float32))

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, index, generator, augment: bool):
        return self.inputs[index], self.targets[index]


class DigitValue(Task):
    name = "digit_value"
    metrics = (Metric("mae", "mean absolute error", higher_is_better=False, points_per_unit=1.0),)

    def load(self, source: str, input_spec) -> Splits:
        return self.training_splits(source)

    def training_splits(self, source: str, *, image_size=None, input_size=None, seed: int = 0,
                        extra_train=()) -> Splits:
        if source != "digits":
            raise ConfigError(f"the digit_value task reads scikit-learn's digits only, not {source!r}")
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)[..., None]
        full = ValueDataset(images, digits.target.astype(np.float32))
        train, test = full.split(0.2, seed)
        return Splits(train, test, source)

    def score(self, outputs: list[np.ndarray], dataset: ValueDataset) -> dict[str, float]:
        predicted = np.asarray(outputs[0], np.float64).reshape(len(dataset), -1)[:, 0]
        return {"mae": float(np.mean(np.abs(predicted - dataset.targets)))}

    def output_loss(self, module, outputs, targets):
        import torch.nn.functional as F

        return F.smooth_l1_loss(outputs[:, 0], targets)

    def training_data(self, dataset: ValueDataset, spec) -> ValueBatches:
        return ValueBatches(dataset, spec)

    def results(self, outputs: list[np.ndarray], fitted, score_threshold: float = 0.3) -> list[Any]:
        return [Value(float(row[0])) for row in np.asarray(outputs[0]).reshape(len(fitted), -1)]

    def to_json(self, result: Value, labels) -> dict[str, Any]:
        return {"value": round(result.value, 4)}

    def draw(self, image: np.ndarray, result: Value, labels) -> np.ndarray:
        from edgeopt.tasks.drawing import caption

        return caption(image, f"{result.value:.1f}")


TASK = register_task(DigitValue())
