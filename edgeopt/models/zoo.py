"""Small built-in models: the demo's default and the conformance suite's test subject.

``tiny_cnn`` packs the layer patterns that break converters in practice — a residual
add, a depthwise convolution, a channel concatenation, BatchNorm, SiLU and Hardswish —
into a model that compiles in seconds. Use it as ``edgeopt.models.zoo:tiny_cnn``;
``?shuffle=true`` adds a ShuffleNetV2 unit (channel split, branch, concat, channel
shuffle), whose reshapes on the batch dimension ExecuTorch's XNNPACK lowering cannot
keep dynamic. ``micro_cnn`` is the opposite: plain ReLU stages a microcontroller runs in int8.
"""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    """Depthwise-separable residual block whose two branches are concatenated."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.depthwise = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.SiLU(),
        )
        self.pointwise_a = nn.Conv2d(channels, half, 1)
        self.pointwise_b = nn.Sequential(nn.Conv2d(channels, half, 1), nn.Hardswish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(x)
        y = torch.cat([self.pointwise_a(y), self.pointwise_b(y)], dim=1)
        return x + y


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous()
    return x.view(batch, channels, height, width)


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16, shuffle: bool = False) -> None:
        super().__init__()
        self.shuffle = shuffle
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.SiLU()
        )
        self.block1 = _Block(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.Hardswish())
        self.block2 = _Block(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)
        if shuffle:
            self.shuffle_branch = nn.Conv2d(width // 2, width // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.stem(x))
        if self.shuffle:
            kept, branch = x.chunk(2, dim=1)
            x = channel_shuffle(torch.cat([kept, self.shuffle_branch(branch)], dim=1))
        x = self.block2(self.down(x))
        return self.head(torch.flatten(self.pool(x), 1))


def tiny_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16, seed: int = 0,
             shuffle: bool = False) -> TinyCNN:
    """A seeded TinyCNN, so every process builds identical weights."""
    torch.manual_seed(seed)
    model = TinyCNN(num_classes, in_channels, width, shuffle)
    # Non-trivial BatchNorm statistics, so a converter that mishandles BN shows up in parity.
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def mlp(in_features: int = 512, hidden: int = 2048, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A Linear-heavy model (where dynamic INT8 pays off), e.g. ``edgeopt.models.zoo:mlp`` with input 1x512."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes)).eval()


class MicroCNN(nn.Sequential):
    """A plain CNN sized for a microcontroller: stages of 3x3 conv, BatchNorm and ReLU, each halving the
    resolution and doubling the channels, then a global average and a linear head. Only operators that
    stay int8 in a full-integer TFLite model (ReLU, not SiLU), so TFLM runs it without float kernels."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8, depth: int = 3) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(depth):
            out = width * 2 ** stage
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def micro_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 8, depth: int = 3, seed: int = 0) -> MicroCNN:
    """A seeded MicroCNN, e.g. ``edgeopt.models.zoo:micro_cnn?in_channels=1&width=16`` (the TFLM target's student)."""
    torch.manual_seed(seed)
    return MicroCNN(num_classes, in_channels, width, depth).eval()
