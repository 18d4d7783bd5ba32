"""Knowledge distillation: a student learns from a teacher's softened outputs.

Loss (Hinton et al. 2015, the guide's recipe): ``alpha * CE(student, labels) + (1 - alpha)
* T^2 * KL(softmax(teacher/T) || softmax(student/T))`` with T=3, alpha=0.7 by default; the
T^2 keeps the soft term's gradient scale independent of T. Optional feature hints add
attention transfer (Zagoruyko & Komodakis 2017) between named layers: it compares
channel-pooled spatial maps, so student and teacher may differ in width, and it adds no
trainable parameters to the student's optimizer.

The returned loss plugs into the shared training loop (``passes.train.fit``), so
distillation gets checkpoints, ``--resume`` and early stopping for free.

Example:
    >>> loss = distillation_loss(teacher, DistillConfig())                 # doctest: +SKIP
    >>> fit(student, train, val, spec, TrainConfig(epochs=6), loss_fn=loss)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.errors import ConfigError
from edgeopt.passes.train import LossFn


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 3.0
    alpha: float = 0.7
    hints: tuple[tuple[str, str], ...] = ()  # (student layer, teacher layer) pairs
    hint_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"the distillation temperature must be positive, not {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha (the weight of the label loss) must be in [0, 1], not {self.alpha}")
        if self.hint_weight < 0 or (self.hint_weight > 0 and not self.hints):
            raise ConfigError("hint_weight needs (student layer, teacher layer) hint pairs and must be >= 0")


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) on temperature-softened distributions, averaged per sample."""
    student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


def attention_map(features: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Channel-pooled, L2-normalised spatial attention, resized to ``size``."""
    attention = features.pow(2).mean(dim=1, keepdim=True)
    if attention.shape[2:] != size:
        attention = F.interpolate(attention, size=size, mode="bilinear", align_corners=False)
    return F.normalize(attention.flatten(1), dim=1)


def distillation_loss(teacher: nn.Module, config: DistillConfig = DistillConfig()) -> LossFn:
    # The teacher runs under no_grad; its parameters are left as they are, because freezing
    # them would change the caller's model (Torch-Pruning, say, then finds nothing to prune).
    teacher.eval()
    captured: dict[str, torch.Tensor] = {}

    def capture(key: str):
        def hook(_layer, _inputs, output):
            captured[key] = output
        return hook

    hooks_placed: set[int] = set()

    def place_hooks(student: nn.Module) -> None:
        if id(student) in hooks_placed or not config.hints:
            return
        student_layers, teacher_layers = dict(student.named_modules()), dict(teacher.named_modules())
        for index, (student_name, teacher_name) in enumerate(config.hints):
            if student_name not in student_layers or teacher_name not in teacher_layers:
                raise ConfigError(f"hint pair ({student_name!r}, {teacher_name!r}) names a layer the "
                                  "student or teacher does not have")
            student_layers[student_name].register_forward_hook(capture(f"s{index}"))
            teacher_layers[teacher_name].register_forward_hook(capture(f"t{index}"))
        hooks_placed.add(id(student))

    def loss(student: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        place_hooks(student)
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        student_logits = student(inputs)
        if student_logits.shape != teacher_logits.shape:
            raise ConfigError(f"student outputs {tuple(student_logits.shape)} but teacher {tuple(teacher_logits.shape)}; "
                              "logit distillation needs the same outputs (same classes)")
        total = config.alpha * F.cross_entropy(student_logits, labels)
        total = total + (1 - config.alpha) * soft_target_loss(student_logits, teacher_logits, config.temperature)
        for index in range(len(config.hints) if config.hint_weight else 0):
            student_map = captured[f"s{index}"]
            teacher_map = attention_map(captured[f"t{index}"].detach(), tuple(student_map.shape[2:]))
            total = total + config.hint_weight * (attention_map(student_map, tuple(student_map.shape[2:]))
                                                  - teacher_map).pow(2).mean()
        return total

    return loss
