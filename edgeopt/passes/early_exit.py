"""The early-exit pass: exit heads after backbone stages of a classifier, trained by distillation from its final head.

Cut points are block names (``layer1``, ``features.6``; see ``edgeopt.models.exits``) or, when none is
named, the block boundaries nearest a quarter, half and three quarters of the network's MACs. The
backbone stays frozen, so the final exit is the model exactly as it was; each head learns from the
labels and from the final head's softened outputs (the guide's T=3, alpha=0.7, through the one
training loop), and the epoch kept is the one whose heads score best on the held-out part of the
training split. Detectors are not cut: their heads decode boxes from several feature maps at once,
and a confidence for "this image is easy" has no single meaning there — the pass says so.

Example:
    >>> net = PASS.apply(model, EarlyExitConfig(cuts=("layer1", "layer2", "layer3")), context)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeopt.core.errors import ConfigError
from edgeopt.passes.base import FineTune, Pass, PassConfig, PassContext, epochs_label

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.models.sources import LoadedModel

AUTO_FRACTIONS = (0.25, 0.5, 0.75)  # where automatic cuts go, as shares of the network's MACs


@dataclass(frozen=True)
class EarlyExitConfig(PassConfig):
    """``cuts``: block names to put an exit after (empty: automatic); ``head_width``: channels of each head's
    convolution (at most the stage's own)."""

    cuts: tuple[str, ...] = ()
    head_width: int = 128
    fine_tune: FineTune = field(default_factory=lambda: FineTune(epochs=10, lr=0.003))

    def __post_init__(self) -> None:
        if self.head_width < 1:
            raise ConfigError(f"the exit heads' width must be at least 1, not {self.head_width}")
        if self.fine_tune.epochs < 1:
            raise ConfigError("exit heads start untrained: early exits need at least one epoch")


class EarlyExitPass(Pass):
    """Attach and train exit heads; the result's module is an ``EarlyExitNet`` whose forward is the original."""

    name = "early_exit"
    config_type = EarlyExitConfig
    cached = False  # an EarlyExitNet is not the architecture its checkpoint would name

    def apply(self, model: "LoadedModel", config: EarlyExitConfig, context: PassContext) -> "LoadedModel":
        import copy

        import torch

        from edgeopt.models.exits import EarlyExitNet, blocks_of

        if model.module is None:
            raise ConfigError("early exits are built on a PyTorch model; this one is an ONNX file")
        example = torch.from_numpy(model.input_spec.example(batch=2))
        with torch.no_grad():
            out = model.module.eval()(example)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ConfigError("early exits are built for classifiers, whose output is one row of logits per image; "
                              "this model gives something else (a detector's boxes come from several feature maps at "
                              "once: it is not cut)")
        backbone = copy.deepcopy(model.module).eval()
        cuts = config.cuts or auto_cuts(blocks_of(backbone, example), example)
        classes = len(context.splits.train.classes)
        net = EarlyExitNet.attach(backbone, example, cuts, classes, config.head_width)
        train_heads(net, model.input_spec, config.fine_tune, context)
        return dataclasses.replace(model, module=net.eval())

    def label(self, config: EarlyExitConfig) -> str:
        where = ", ".join(config.cuts) if config.cuts else "auto"
        return f"early exits ({where}){epochs_label(config)}"


def auto_cuts(blocks: list[tuple[str, "nn.Module"]], example: "torch.Tensor") -> tuple[str, ...]:
    """The block boundaries (where a 4-D feature map comes out) nearest ``AUTO_FRACTIONS`` of the MACs."""
    import torch

    from edgeopt.measure.profile import count_macs

    cumulative, total, x, spatial = [], 0, example, []
    with torch.no_grad():
        for _, block in blocks:
            macs, _ = count_macs(block, x)
            x = block(x)
            total += macs
            cumulative.append(total)
            spatial.append(x.dim() == 4)
    options = [i for i in range(len(blocks) - 1) if spatial[i]]
    chosen: list[str] = []
    for fraction in AUTO_FRACTIONS:
        if options:
            best = min(options, key=lambda i: abs(cumulative[i] / max(total, 1) - fraction))
            if blocks[best][0] not in chosen:
                chosen.append(blocks[best][0])
    if not chosen:
        raise ConfigError("found no block boundary with a feature map to put an exit after; name the cuts")
    return tuple(sorted(chosen, key=[name for name, _ in blocks].index))


def train_heads(net: "nn.Module", spec, settings: FineTune, context: PassContext) -> None:
    """Train ``net``'s heads in place: labels and the final head's soft outputs, the best validation epoch kept."""
    from edgeopt.passes.train import fit

    train, val = context.splits.train.split(settings.validation_split, context.seed)
    task = context.task

    def loss(module, inputs, labels):
        logits = module.exits(inputs)
        final = logits[-1].detach()
        terms = [settings.alpha * task.output_loss(module, early, labels)
                 + (1 - settings.alpha) * task.soft_loss(early, final, settings.temperature) for early in logits[:-1]]
        return sum(terms) / len(terms)

    def heads_score(module) -> float:
        return float(sum(exit_accuracies(module, val, spec)[:-1]) / len(module.heads))

    fit(net, train, val, spec, settings.train_config(context.seed), loss, heads_score,
        checkpoint=context.checkpoint, resume=context.resume, on_epoch=context.on_epoch,
        show_progress=context.show_progress, task=task, deadline=context.deadline)


def exit_logits(net: "nn.Module", dataset, spec) -> list:
    """Every exit's logits (numpy, final last) for every image of ``dataset``."""
    import numpy as np
    import torch

    from edgeopt.measure.inference import outputs_on

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.float().numpy() for t in net.exits(torch.from_numpy(np.ascontiguousarray(batch)))]

    was_training = net.training
    net.eval()
    try:
        return outputs_on(run, dataset, spec)
    finally:
        net.train(was_training)


def exit_accuracies(net: "nn.Module", dataset, spec) -> list[float]:
    """Top-1 of each exit on ``dataset``, the final last."""
    return [float((logits.argmax(1) == dataset.labels).mean()) for logits in exit_logits(net, dataset, spec)]


PASS = EarlyExitPass()
