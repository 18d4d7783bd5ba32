"""Training batches of a classifier: images and their labels; flips and padded crops move pixels only."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgeopt.core.spec import InputSpec
from edgeopt.images import to_input
from edgeopt.tasks.augment import padded_crop


class ClassificationBatches:
    """Images and their labels; random flips and padded crops move pixels only."""

    def __init__(self, dataset, spec: InputSpec) -> None:
        self.inputs = torch.from_numpy(to_input(dataset.images, spec))
        self.labels = torch.from_numpy(dataset.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, generator: torch.Generator, augment: bool) -> tuple[torch.Tensor, Any]:
        inputs = self.inputs[index]
        if augment:
            flip = torch.rand(len(inputs), generator=generator) < 0.5
            inputs, _ = padded_crop(torch.where(flip[:, None, None, None], inputs.flip(-1), inputs), generator)
        return inputs, self.labels[index]
