"""Unstructured sparsity: zero the smallest-magnitude weights, fine-tune with the masks on, fold them in.

Dense runtimes (ONNX Runtime, OpenVINO, XNNPACK, TensorRT) do the same work on zeros, so
a sparse model is smaller only once compressed and runs no faster; the report says so.
Structured pruning (``prune``) is the one that makes a model faster.

Example:
    >>> sparse = PASS.apply(model, SparsifyConfig(amount=0.6), context)     # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeopt.core.errors import ConfigError
from edgeopt.passes.base import FineTune, Pass, PassConfig, PassContext, epochs_label
from edgeopt.passes.finetune import fine_tune
from edgeopt.passes.prune import prunable

if TYPE_CHECKING:  # torch is imported where weights are zeroed: the CLI reads SparsifyConfig's defaults without it
    from torch import nn

    from edgeopt.models.sources import LoadedModel

SCOPES = ("global", "layer")


@dataclass
class SparsityReport:
    sparsity: float
    per_layer: dict[str, float]
    note: str = ("unstructured sparsity only shrinks a compressed file; dense runtimes (ONNX Runtime, OpenVINO, "
                 "XNNPACK, TensorRT) do the same work and run no faster — use structured pruning for speed")


def sparsify(module: nn.Module, amount: float, scope: str = "global", permanent: bool = True) -> SparsityReport:
    """Zero the ``amount`` smallest-magnitude weights of conv/linear layers.

    With ``permanent=False`` the masks stay attached (zeros stay zero while fine-tuning);
    ``make_permanent`` then folds them into plain weight tensors.
    """
    from torch.nn.utils import prune

    if not 0.0 < amount < 1.0:
        raise ConfigError(f"sparsity must be between 0 and 1 (exclusive), not {amount}")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    targets = [(layer, "weight") for layer in module.modules() if prunable(layer)]
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for layer, name in targets:
            prune.l1_unstructured(layer, name, amount=amount)
    return make_permanent(module) if permanent else sparsity_of(module)


def make_permanent(module: nn.Module) -> SparsityReport:
    """Fold pruning masks into the weights: plain tensors with zeros, no hooks left."""
    from torch.nn.utils import prune

    for layer in module.modules():
        if prunable(layer) and prune.is_pruned(layer):
            prune.remove(layer, "weight")
    return sparsity_of(module)


def sparsity_of(module: nn.Module) -> SparsityReport:
    per_layer, zeros, total = {}, 0, 0
    for name, layer in module.named_modules():
        if prunable(layer):
            weight = layer.weight.detach()
            per_layer[name] = float((weight == 0).float().mean())
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return SparsityReport(zeros / max(total, 1), per_layer)


@dataclass(frozen=True)
class SparsifyConfig(PassConfig):
    """Zero ``amount`` of the conv/linear weights, ranked across all layers or per layer."""

    amount: float = 0.5
    scope: str = "global"
    fine_tune: FineTune = field(default_factory=FineTune)

    def __post_init__(self) -> None:
        if not 0.0 < self.amount < 1.0:
            raise ConfigError(f"sparsity must be between 0 and 1 (exclusive), not {self.amount}")
        if self.scope not in SCOPES:
            raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")


class SparsifyPass(Pass):
    name = "sparsify"
    config_type = SparsifyConfig

    def apply(self, model: "LoadedModel", config: SparsifyConfig, context: PassContext) -> "LoadedModel":
        sparse = dataclasses.replace(model, module=copy.deepcopy(model.module))
        sparsify(sparse.module, config.amount, config.scope, permanent=False)  # zeros stay zero while fine-tuning
        fine_tune(sparse.module, sparse.input_spec, config.fine_tune, context)
        make_permanent(sparse.module)
        return sparse

    def label(self, config: SparsifyConfig) -> str:
        return f"sparsify {config.amount:g}{epochs_label(config)}"


PASS = SparsifyPass()
