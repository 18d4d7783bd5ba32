"""Distillation: a lighter student, or the same model at a lower resolution, taught by the teacher.

The student is an architecture source (``torchvision:mobilenet_v2``: classes and input
channels are set from the data), a checkpoint (a pruned model, say, trained further from
its weights) or, when none is named, a copy of the model itself; with
``input_size`` it learns at that lower resolution. Training is the shared fine-tune with
knowledge distillation from the context's teacher (``passes.kd``), optionally with
attention-transfer feature hints between named layers.

Example:
    >>> student = PASS.apply(model, DistillConfig(student="torchvision:mobilenet_v2"), context)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeopt.core.errors import ConfigError
from edgeopt.core.size import Size, of_shape, parse_size, scaled, size_text
from edgeopt.passes.base import (
    FineTune,
    Pass,
    PassConfig,
    PassContext,
    SearchRequest,
    SearchStep,
    epochs_label,
)
from edgeopt.passes.finetune import fine_tune

if TYPE_CHECKING:
    from edgeopt.models.sources import LoadedModel


@dataclass(frozen=True)
class DistillConfig(PassConfig):
    """``student``: an architecture source (None: the model itself); ``input_size``: a lower
    input size, a side or ``"WxH"`` (None: the model's); ``hints``: (student layer, teacher layer) pairs."""

    student: str | None = None
    input_size: int | str | None = None
    hints: tuple[tuple[str, str], ...] = ()
    hint_weight: float = 0.0
    fine_tune: FineTune = field(default_factory=lambda: FineTune(lr=0.002))

    def __post_init__(self) -> None:
        parse_size(self.input_size)  # refuses what is not a size
        if not self.fine_tune.distill:
            raise ConfigError("distillation trains with the teacher's soft targets: fine_tune.distill must stay on")
        if self.hint_weight < 0 or (self.hint_weight > 0 and not self.hints):
            raise ConfigError("a hint weight needs (student layer, teacher layer) hint pairs and must be >= 0")
        if any(len(pair) != 2 for pair in self.hints):
            raise ConfigError("hints are (student layer, teacher layer) pairs")


class DistillPass(Pass):
    name = "distill"
    config_type = DistillConfig

    def apply(self, model: "LoadedModel", config: DistillConfig, context: PassContext) -> "LoadedModel":
        student = self._student(model, config, context)
        size = parse_size(config.input_size)
        if size:
            spec = student.input_spec
            student = dataclasses.replace(student, input_spec=dataclasses.replace(
                spec, shape=(*spec.shape[:-2], size[1], size[0])))
            if student.head is not None:  # a detector's anchors belong to its input size
                student = at_input_size(student, size)
        fine_tune(student.module, student.input_spec, config.fine_tune, context, hints=config.hints,
                  hint_weight=config.hint_weight)
        return student

    @staticmethod
    def _student(model: "LoadedModel", config: DistillConfig, context: PassContext) -> "LoadedModel":
        if not config.student:
            return dataclasses.replace(model, module=copy.deepcopy(model.module))
        from edgeopt.models.sources import CHECKPOINT_SUFFIXES, arch_for_dataset, load_model

        if config.student.lower().endswith(CHECKPOINT_SUFFIXES):
            return load_model(config.student, origin=context.origin)
        # a detector is built for its size
        size = size_text(of_shape(model.input_spec.shape)) if model.head is not None else None
        arch = arch_for_dataset(config.student, len(context.splits.classes), context.splits.train.channels, size=size)
        student = load_model(arch, input=model.input_spec, origin=context.origin)
        student.task, student.labels = model.task, model.labels
        return student

    def search_steps(self, request: SearchRequest) -> list[SearchStep]:
        """The model itself at each of the space's ``resolutions`` (fractions of its input's sides), and
        each student (too small an input for a student's downsampling: none), fine-tuned for the
        space's ``epochs``. Lower resolutions come right after pruning when latency is the priority;
        otherwise the students come first."""
        space, size = request.space, request.input_shape or parse_size(request.input_size)  # (width, height)
        tune = {"epochs": space.epochs}
        resolution, students = (2.0, 3.0) if request.priority == "latency" else (3.0, 2.0)
        lower = [SearchStep(self.config(input_size=size_text(scaled(size, f)), fine_tune=tune), resolution)
                 for f in space.resolutions if size]
        usable = request.students if size and min(size) >= space.min_student_input else ()
        return lower + [SearchStep(self.config(student=s, fine_tune=tune), students) for s in usable]

    def model_sources(self, config: DistillConfig) -> tuple[str, ...]:
        return (config.student,) if config.student else ()

    def label(self, config: DistillConfig) -> str:
        name, _, query = (config.student or "same arch").split(":")[-1].partition("?")
        student = name.split("/")[-1] + (f"({query.replace('&', ',')})" if query else "")
        size = f" @{config.input_size}px" if config.input_size else ""
        return f"distil→{student}{size}{epochs_label(config)}"


def at_input_size(model: "LoadedModel", size: Size) -> "LoadedModel":
    """A detector rebuilt for ``size`` (width, height): the same weights, the anchors of the new size, its arch
    saying so."""
    from edgeopt.models.detectors import head_record
    from edgeopt.models.sources import with_query

    resize = getattr(model.module, "at_size", None)
    if resize is None:
        raise ConfigError(f"{type(model.module).__name__} cannot change its input size; distil it to a student instead")
    module = resize((size[1], size[0]))
    return dataclasses.replace(model, module=module, head=head_record(module),
                               arch=with_query(model.arch, size=size_text(size)) if model.arch else None)


PASS = DistillPass()
