"""Fine-tuning: the one function every pass trains with, and the ``finetune`` pass itself.

``fine_tune`` trains a module in place on the context's training split (a stratified
part held out to pick the best epoch), with the task's loss or, when the settings say
``distill``, knowledge distillation from the context's teacher; it checkpoints every
epoch, resumes from the context's checkpoint path, and stops at the context's deadline
(a search's budget) between batches. Pruning, distillation, QAT,
``edgeopt train`` and ``edgeopt optimize`` all train through it.

Example:
    >>> tuned = PASS.apply(model, FinetuneConfig(FineTune(epochs=3, distill=False)), context)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgeopt.passes.base import FineTune, Pass, PassConfig, PassContext, epochs_label

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.models.sources import LoadedModel
    from edgeopt.passes.train import TrainResult
    from edgeopt.core.spec import InputSpec


def fine_tune(module: "nn.Module", spec: "InputSpec", settings: FineTune, context: PassContext,
              checkpoint: Path | None = None, hints: tuple[tuple[str, str], ...] = (),
              hint_weight: float = 0.0, penalty: "Callable[[nn.Module], torch.Tensor] | None" = None
              ) -> "TrainResult | None":
    """Train ``module`` in place as ``settings`` say (nothing when they ask for 0 epochs).

    ``penalty(module)`` is added to every batch's loss (FedProx's proximal term, say).
    """
    if settings.epochs == 0:
        return None
    from edgeopt.passes.kd import distillation_loss
    from edgeopt.passes.train import Validator, fit

    from edgeopt.models.detectors import head_record

    train, val = context.splits.train.split(settings.validation_split, context.seed)
    task = context.task.bind(head_record(module)) if head_record(module) else context.task  # a student's own anchors
    if settings.distill:
        teacher = context.teacher
        loss = distillation_loss(teacher.module, teacher.input_spec.shape, settings.temperature, settings.alpha,
                                 hints, hint_weight, task=task)
    else:
        loss = task.training_loss()
    if penalty is not None:
        loss = _with_penalty(loss, penalty)
    checkpoint = checkpoint or context.checkpoint
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return fit(module, train, val, spec, settings.train_config(context.seed), loss, Validator(task, val, spec),
               checkpoint=checkpoint, resume=context.resume, on_epoch=context.on_epoch,
               show_progress=context.show_progress, task=task, deadline=context.deadline)


def _with_penalty(loss, penalty):
    return lambda module, inputs, targets: loss(module, inputs, targets) + penalty(module)


@dataclass(frozen=True)
class FinetuneConfig(PassConfig):
    fine_tune: FineTune = field(default_factory=lambda: FineTune(distill=False))


class FinetunePass(Pass):
    """Train the model further as it is: with its task's loss, or distilled from the teacher."""

    name = "finetune"
    config_type = FinetuneConfig

    def apply(self, model: "LoadedModel", config: FinetuneConfig, context: PassContext) -> "LoadedModel":
        tuned = dataclasses.replace(model, module=copy.deepcopy(model.module))
        fine_tune(tuned.module, tuned.input_spec, config.fine_tune, context)
        return tuned

    def label(self, config: FinetuneConfig) -> str:
        return f"fine-tune{' (KD)' if config.fine_tune.distill else ''}{epochs_label(config)}"


PASS = FinetunePass()
