"""Augmentation shared by the tasks' training batches (torch; imported lazily by the tasks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padded_crop(batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Random crops of the batch padded by 1/8 of the side (reflect); the (dx, dy) each image moved by."""
    height, width = batch.shape[-2:]
    pad = max(1, min(height, width) // 8)
    padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (len(batch), 2), generator=generator).tolist()
    crops = torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])
    return crops, [(pad - dx, pad - dy) for dy, dx in offsets]
