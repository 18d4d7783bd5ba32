"""A deliberately slow pass: ``steps`` steps of ``STEP_S`` seconds, checking the context's deadline between them.

It stands for any long step of a build (a fine-tune, a calibration): it reports how far it
is, stops cleanly when a search's budget runs out (``BudgetExhausted`` from the deadline),
and keeps its progress in its checkpoint, as training does, so a resumed build continues
where it stopped. The model comes back unchanged (a copy). ``STEP_S`` is not part of the
config (nor of the recipe's hash): a test makes a resumed run finish quickly by lowering it.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

from edgeopt import ConfigError, Pass, PassConfig, register_pass

STEP = "slow work"
STEP_S = 0.5


@dataclass(frozen=True)
class SlowConfig(PassConfig):
    steps: int = 40

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError("the slow pass needs at least one step")


class SlowPass(Pass):
    name = "slow"
    config_type = SlowConfig

    def apply(self, model, config: SlowConfig, context):
        checkpoint = context.checkpoint
        done = int(checkpoint.read_text()) if context.resume and checkpoint and checkpoint.is_file() else 0
        for step in range(done, config.steps):
            context.deadline.check(STEP, step, config.steps)
            time.sleep(STEP_S)
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.write_text(str(step + 1))
        return dataclasses.replace(model, module=copy.deepcopy(model.module))

    def label(self, config: SlowConfig) -> str:
        return f"slow ×{config.steps}"

    def untrained(self, config: SlowConfig) -> None:
        return None  # the architecture is the input's: a latency probe leaves the step out


register_pass(SlowPass())
