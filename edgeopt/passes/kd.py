"""Knowledge distillation's loss: a student learns from a teacher's softened outputs.

``alpha * hard(student, labels) + (1 - alpha) * soft(student, teacher, T)``; for a classifier
the hard term is cross-entropy and the soft one T^2 * KL(softmax(teacher/T) || softmax(student/T))
(Hinton et al. 2015; the guide's T=3, alpha=0.7), for a detector the task's own (see
``Task.soft_loss``). Optional feature hints add attention transfer (Zagoruyko &
Komodakis 2017) between named layers: it compares channel-pooled spatial maps, so student
and teacher may differ in width, and it adds no trainable parameters. The teacher sees the
batch at its own input size (a student distilled to a lower resolution is taught by the
teacher at the resolution it was trained for).

The loss plugs into the shared training loop through ``passes.finetune.fine_tune``.

Example:
    >>> loss = distillation_loss(teacher, (1, 3, 64, 64), temperature=3.0, alpha=0.7)   # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.core.errors import ConfigError
from edgeopt.tasks import Task, get_task
from edgeopt.tasks.base import LossFn


def attention_map(features: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Channel-pooled, L2-normalised spatial attention, resized to ``size``."""
    attention = features.pow(2).mean(dim=1, keepdim=True)
    if attention.shape[2:] != size:
        attention = F.interpolate(attention, size=size, mode="bilinear", align_corners=False)
    return F.normalize(attention.flatten(1), dim=1)


def distillation_loss(teacher: nn.Module, teacher_shape: tuple[int, ...], temperature: float = 3.0,
                      alpha: float = 0.7, hints: tuple[tuple[str, str], ...] = (), hint_weight: float = 0.0,
                      task: Task | None = None) -> LossFn:
    """The KD loss against ``teacher``, which takes inputs of ``teacher_shape`` (batch first).

    ``task`` (default: classification) supplies the hard loss against the ground truth and the
    soft loss against the teacher's outputs, so a detector distills as a classifier does.
    """
    task = task or get_task("classification")
    if hint_weight < 0 or (hint_weight > 0 and not hints):
        raise ConfigError("a hint weight needs (student layer, teacher layer) hint pairs and must be >= 0")
    # The teacher runs under no_grad; its parameters are left as they are, because freezing
    # them would change the caller's model (Torch-Pruning, say, then finds nothing to prune).
    teacher.eval()
    teacher_size = tuple(teacher_shape[2:])
    captured: dict[str, torch.Tensor] = {}

    def capture(key: str):
        def hook(_layer, _inputs, output):
            captured[key] = output
        return hook

    hooks_placed: set[int] = set()

    def place_hooks(student: nn.Module) -> None:
        if id(student) in hooks_placed or not hints:
            return
        student_layers, teacher_layers = dict(student.named_modules()), dict(teacher.named_modules())
        for index, (student_name, teacher_name) in enumerate(hints):
            if student_name not in student_layers or teacher_name not in teacher_layers:
                raise ConfigError(f"hint pair ({student_name!r}, {teacher_name!r}) names a layer the "
                                  "student or teacher does not have")
            student_layers[student_name].register_forward_hook(capture(f"s{index}"))
            teacher_layers[teacher_name].register_forward_hook(capture(f"t{index}"))
        hooks_placed.add(id(student))

    def loss(student: nn.Module, inputs: torch.Tensor, targets) -> torch.Tensor:
        place_hooks(student)
        with torch.no_grad():
            teacher_outputs = teacher(inputs if task.teacher_sees_student_input else _at_size(inputs, teacher_size))
        student_outputs = student(inputs)
        total = alpha * task.output_loss(student, student_outputs, targets)
        total = total + (1 - alpha) * task.soft_loss(student_outputs, teacher_outputs, temperature)
        for index in range(len(hints) if hint_weight else 0):
            student_map = captured[f"s{index}"]
            teacher_map = attention_map(captured[f"t{index}"].detach(), tuple(student_map.shape[2:]))
            total = total + hint_weight * (attention_map(student_map, tuple(student_map.shape[2:]))
                                           - teacher_map).pow(2).mean()
        return total

    return loss


def _at_size(inputs: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``inputs`` resized (bilinear) to the spatial ``size`` when they differ, else as they are."""
    if inputs.dim() != 4 or tuple(inputs.shape[2:]) == size or len(size) != 2:
        return inputs
    return F.interpolate(inputs, size=size, mode="bilinear", align_corners=False, antialias=False)
