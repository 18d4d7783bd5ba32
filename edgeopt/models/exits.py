"""Early exits: a classifier cut into stages, with a small classifier head after every stage but the last.

The guide's "adjust the number of layers": an easy input is answered by an early head and never
meets the rest of the network (BranchyNet, Teerapittayanon et al. 2016; Shallow-Deep Networks,
Kaya et al. 2019). The network is read as its children in order — ResNet's stem, ``layer1`` …
``layer4``, pooling and ``fc``; MobileNet's and ShuffleNet's ``features`` blocks one by one, then
the classifier — with a flatten before the first linear layer, and that reading is checked
against the model's own forward on an example before anything is cut (a model whose forward
does something else is refused with what to do). Cut points are block names (``passes.early_exit``
chooses them by MACs when the user names none).

The backbone is never changed: the last exit is the original model, so "never exit early" gives
exactly its answers. Only the heads train (``passes.early_exit``); the backbone stays frozen and
in eval mode, its batch-norm statistics untouched.

Example:
    >>> net = EarlyExitNet.attach(resnet, example, cuts=("layer1", "layer2", "layer3"), classes=6)   # doctest: +SKIP
    >>> [logits.shape for logits in net.exits(example)]                                             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeopt.core.errors import ConfigError

EXPANDED = ("features",)  # children whose own children are the blocks to cut between


def blocks_of(module: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """``module`` as (name, block) pairs whose composition in order is its forward, checked on ``example``.

    Before the first linear layer a 4-D feature map is flattened, after global average pooling when the
    layer takes one value per channel (MobileNet and ShuffleNet pool in their forward, not in a child)."""
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if name in EXPANDED and isinstance(child, nn.Sequential):
            blocks += [(f"{name}.{inner}", block) for inner, block in child.named_children()]
        else:
            blocks.append((name, child))
    flat: list[tuple[str, nn.Module]] = []
    refusal = (f"{type(module).__name__}'s forward is not its children in order, so it cannot be cut into stages "
               "here; early exits take ResNet, MobileNet, ShuffleNet and other networks built that way")
    x = example
    with torch.no_grad():
        try:
            for name, block in blocks:
                linear = _first_linear(block)
                if linear is not None and x.dim() == 4:
                    if x.shape[1] == linear.in_features and x[0].numel() != linear.in_features:
                        flat.append(("pool", nn.AdaptiveAvgPool2d(1)))
                        x = flat[-1][1](x)
                    flat.append(("flatten", nn.Flatten(1)))
                    x = flat[-1][1](x)
                flat.append((name, block))
                x = block(x)
            expected = module(example)
        except (RuntimeError, TypeError, ValueError):
            raise ConfigError(refusal) from None
    if not isinstance(expected, torch.Tensor) or expected.shape != x.shape or not torch.allclose(expected, x,
                                                                                                 atol=1e-4):
        raise ConfigError(refusal)
    return flat


def _first_linear(block: nn.Module) -> nn.Linear | None:
    """The linear layer a block starts with (past dropout and nesting), or None."""
    first = next((m for m in block.modules() if not isinstance(m, (nn.Sequential, nn.Dropout))), None)
    return first if isinstance(first, nn.Linear) else None


def exit_head(channels: int, classes: int, width: int = 128) -> nn.Module:
    """A 3x3 convolution, batch norm and ReLU, global pooling and a linear classifier."""
    inner = min(channels, width)
    return nn.Sequential(nn.Conv2d(channels, inner, 3, padding=1, bias=False), nn.BatchNorm2d(inner),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(inner, classes))


class EarlyExitNet(nn.Module):
    """Stages of a frozen backbone, each but the last followed by an exit head; ``forward`` is the original model."""

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module], cuts: Sequence[str]) -> None:
        super().__init__()
        if len(heads) != len(stages) - 1 or len(cuts) != len(heads):
            raise ConfigError("an early-exit network needs one head and one cut per stage but the last")
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        self.cuts = tuple(cuts)
        for parameter in self.stages.parameters():
            parameter.requires_grad_(False)

    @classmethod
    def attach(cls, backbone: nn.Module, example: torch.Tensor, cuts: Sequence[str], classes: int,
               head_width: int = 128) -> "EarlyExitNet":
        """Cut ``backbone`` (its blocks checked on ``example``) after the blocks named in ``cuts`` and attach heads."""
        backbone = backbone.eval()
        blocks = blocks_of(backbone, example)
        names = [name for name, _ in blocks]
        cuts = tuple(cuts or ())
        unknown = [c for c in cuts if c not in names[:-1]]
        if unknown or not cuts:
            raise ConfigError(f"cut point(s) {unknown or '(none)'} are not blocks of this network with blocks after "
                              f"them; its blocks: {', '.join(names)}")
        order = sorted(names.index(c) for c in cuts)
        stages, start = [], 0
        for index in [*order, len(blocks) - 1]:
            stages.append(nn.Sequential(*(block for _, block in blocks[start:index + 1])))
            start = index + 1
        if len(set(cuts)) != len(cuts):
            raise ConfigError(f"cut points {list(cuts)} name a block twice; name each once")
        heads, x = [], example
        with torch.no_grad():
            for stage, cut in zip(stages[:-1], [names[i] for i in order]):
                x = stage(x)
                if x.dim() != 4:
                    raise ConfigError(f"after {cut!r} the network gives a {x.dim()}-D tensor, not a feature map; an "
                                      "exit goes after a block that gives one (its blocks: " + ", ".join(names) + ")")
                heads.append(exit_head(x.shape[1], classes, head_width))
        return cls(stages, heads, [names[i] for i in order])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits, the final (the original model's) last."""
        logits = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            logits.append(head(x))
        logits.append(self.stages[-1](x))
        return logits

    def parts(self) -> list[nn.Module]:
        """The stages as a runtime runs them: each but the last with its head, giving (features, logits)."""
        return [StageWithExit(stage, head) for stage, head in zip(self.stages, self.heads)] + [self.stages[-1]]

    def train(self, mode: bool = True) -> "EarlyExitNet":
        super().train(mode)
        self.stages.eval()  # frozen: its batch-norm statistics stay the original model's
        return self


class StageWithExit(nn.Module):
    """A stage and its exit head: the features for the next stage, and this exit's logits."""

    def __init__(self, stage: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stage, self.head = stage, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.stage(x)
        return features, self.head(features)
