"""Training batches of a detector: images and their boxes; flips and padded crops move the boxes with the pixels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgeopt.core.spec import InputSpec
from edgeopt.images import to_input
from edgeopt.tasks.augment import padded_crop


class DetectionBatches:
    """Images and their boxes; flips and padded crops move the boxes with the pixels."""

    def __init__(self, dataset, spec: InputSpec) -> None:
        self.inputs = torch.from_numpy(to_input(dataset.images, spec))
        scale = np.asarray([spec.shape[-1] / dataset.images.shape[2], spec.shape[-2] / dataset.images.shape[1]] * 2,
                           np.float32)
        self.boxes = [torch.from_numpy(np.asarray(b, np.float32).reshape(-1, 4) * scale) for b in dataset.boxes]
        self.labels = [torch.from_numpy(np.asarray(l, np.int64)) for l in dataset.box_labels]

    def __len__(self) -> int:
        return len(self.boxes)

    def batch(self, index: torch.Tensor, generator: torch.Generator, augment: bool) -> tuple[torch.Tensor, Any]:
        inputs = self.inputs[index]
        boxes = [self.boxes[i].clone() for i in index.tolist()]
        labels = [self.labels[i] for i in index.tolist()]
        if augment:
            width = inputs.shape[-1]
            flip = (torch.rand(len(inputs), generator=generator) < 0.5).tolist()
            inputs = torch.stack([x.flip(-1) if f else x for x, f in zip(inputs, flip)])
            boxes = [torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1) if f else b
                     for b, f in zip(boxes, flip)]
            inputs, shifts = padded_crop(inputs, generator)
            boxes, labels = zip(*(_shift(b, l, dx, dy, inputs.shape[-2:]) for b, l, (dx, dy) in zip(boxes, labels, shifts)))
        return inputs, [{"boxes": b, "labels": l} for b, l in zip(boxes, labels)]


def _shift(boxes: torch.Tensor, labels: torch.Tensor, dx: int, dy: int, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes moved by (dx, dy), clipped to the image; boxes left under 2 px wide or high are dropped."""
    height, width = int(size[0]), int(size[1])
    moved = boxes + torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype)
    moved[:, 0::2] = moved[:, 0::2].clamp(0, width)
    moved[:, 1::2] = moved[:, 1::2].clamp(0, height)
    keep = ((moved[:, 2] - moved[:, 0]) >= 2) & ((moved[:, 3] - moved[:, 1]) >= 2)
    return moved[keep], labels[keep]
