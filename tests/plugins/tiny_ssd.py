"""An SSDlite-style detector small enough to export in a second: torchvision's ``SSD`` with its ``SSDLiteHead``
on a two-convolution backbone (two feature maps), wrapped in edgeopt's ``SSDGraph`` like
``edgeopt.models.detectors:ssdlite``. Same head, anchors and layer names; a MobileNetV3 backbone costs the ONNX
export tens of seconds that tests of what happens to the head do not need."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

from torch import nn

from edgeopt.models.detectors import SSDGraph


class _Backbone(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 16, 3, stride=4, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.stage2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU6())

    def forward(self, x):
        first = self.stage1(x)
        return OrderedDict([("0", first), ("1", self.stage2(first))])


def build(num_classes: int = 2, in_channels: int = 1, size: int = 64) -> SSDGraph:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    anchors = DefaultBoxGenerator([[2, 3], [2, 3]], min_ratio=0.2, max_ratio=0.95)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead([16, 32], anchors.num_anchors_per_location(), num_classes + 1, norm)
    ssd = SSD(_Backbone(in_channels), anchors, (size, size), num_classes + 1, head=head)
    return SSDGraph(ssd, (size, size))
