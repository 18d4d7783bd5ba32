"""A model with a GELU, an operator TensorFlow Lite Micro has no kernel for (tflite-micro 2026-10)."""

from torch import nn


def gelu_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
