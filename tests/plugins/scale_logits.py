"""A pass that lives outside edgeopt: it scales a classifier's logits by scaling its last layer.

Importing this module registers the pass; a recipe step that names it records this module,
so `edgeopt build` finds it in a fresh process. Nothing in edgeopt/ knows about it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from edgeopt import ConfigError, Pass, PassConfig, register_pass


@dataclass(frozen=True)
class ScaleConfig(PassConfig):
    factor: float = 0.5

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ConfigError(f"the scale factor must be positive, not {self.factor}")


class ScaleLogits(Pass):
    name = "scale_logits"
    config_type = ScaleConfig

    def apply(self, model, config: ScaleConfig, context):
        scaled = dataclasses.replace(model, module=copy.deepcopy(model.module))
        last = [m for m in scaled.module.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(config.factor)
            last.bias.mul_(config.factor)
        return scaled

    def label(self, config: ScaleConfig) -> str:
        return f"scale logits ×{config.factor:g}"


register_pass(ScaleLogits())
