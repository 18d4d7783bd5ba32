"""A user's own architecture, outside edgeopt and not installed as a plugin: its checkpoints name it
(``tests.plugins.custom_arch:build``), and edgeopt imports it only when the user names it too (``--arch``)."""

from __future__ import annotations

from torch import nn


def build(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
