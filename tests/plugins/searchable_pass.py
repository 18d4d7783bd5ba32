"""A pass from outside edgeopt that a search tries by default: it declares its own stage-2 candidates.

It rounds every weight to 16-bit floats and back (the precision a half-float runtime would keep),
and offers the search two of those: float16 before anything else (it needs no fine-tuning), and
bfloat16 after the built-in techniques — except when accuracy is the priority. Nothing in
edgeopt/ names it: registering it (``edgeopt.register_pass(PASS)``) is all the search needs.

Unlike ``scale_logits`` it does not register itself on import, so a test that registers it can
take it out again and leave every other search in the process as it was.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from edgeopt import ConfigError, Pass, PassConfig
from edgeopt.passes import SearchRequest, SearchStep
from edgeopt.passes.base import FIRST

DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class RoundConfig(PassConfig):
    dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")


class RoundWeights(Pass):
    name = "round_weights"
    config_type = RoundConfig

    def apply(self, model, config: RoundConfig, context):
        import torch

        rounded = dataclasses.replace(model, module=copy.deepcopy(model.module))
        with torch.no_grad():
            for parameter in rounded.module.parameters():
                parameter.copy_(parameter.to(getattr(torch, config.dtype)).to(parameter.dtype))
        return rounded

    def label(self, config: RoundConfig) -> str:
        return f"round weights to {config.dtype}"

    def search_steps(self, request: SearchRequest) -> list[SearchStep]:
        if request.priority == "accuracy":
            return []
        return [SearchStep(RoundConfig("float16"), order=FIRST), SearchStep(RoundConfig("bfloat16"))]


PASS = RoundWeights()
