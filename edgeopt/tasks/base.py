"""Task: what a model's outputs mean, and how good they are.

A task supplies everything that depends on the kind of model: loading its data, its
quality metrics with their direction (the first-listed main one is what goals and the
Pareto choice use), scoring outputs on a dataset, output fidelity against a reference
(and when outputs are broken for it), the per-class details a report shows, and the
training loss. Everything downstream reads ``{metric: value}`` and asks the task, so
nothing assumes a classifier. Tasks import no torch at module level: serving uses them.

Example:
    >>> from edgeopt.tasks import get_task
    >>> task = get_task("classification")
    >>> task.main.name, round(task.main.drop_points(0.98, 0.97), 2)
    ('top1', 1.0)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgeopt.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from edgeopt.data import DatasetSplits
    from edgeopt.spec import InputSpec

LossFn = Callable[["torch.nn.Module", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Metric:
    """A quality metric: its name in records, its title for people, and which way is better.

    Values are fractions shown in points (``points_per_unit`` = 100): losing one point of
    top-1 is a drop of 1.0.
    """

    name: str
    title: str
    higher_is_better: bool = True
    points_per_unit: float = 100.0

    def drop_points(self, baseline: float, value: float) -> float:
        """Points lost against ``baseline`` (negative: better than the baseline)."""
        change = value - baseline if self.higher_is_better else baseline - value
        return -self.points_per_unit * change

    def sort_key(self, value: float) -> float:
        """Ascending sort puts the best first."""
        return -value if self.higher_is_better else value

    def format(self, value: float) -> str:
        return f"{value:.2%}" if self.points_per_unit == 100.0 else f"{value:.4g}"


class Task(ABC):
    """One kind of model output; see the module docstring. Subclasses are registered by
    defining ``TASK`` in a module of ``edgeopt.tasks``."""

    name: str
    metrics: tuple[Metric, ...] = ()
    agreement: str | None = None  # the fidelity measure an FP32 export must match exactly
    students: tuple[str, ...] = ()  # lighter architectures a search distils into by default
    # whether a teacher must see the student's own input in distillation: a detector's outputs are
    # per anchor, and anchors depend on the input size (a classifier's teacher sees its own size)
    teacher_sees_student_input: bool = False

    @property
    def main(self) -> Metric:
        """The main metric (the first listed): what goals and the Pareto choice use by default."""
        if not self.metrics:
            raise ConfigError(f"a model with task {self.name!r} has no quality metric to score; give it a task "
                              "(e.g. train it with `edgeopt train`, which records classification)")
        return self.metrics[0]

    def metric(self, name: str | None = None) -> Metric:
        """The metric called ``name`` (None: the main one)."""
        if name is None:
            return self.main
        found = next((m for m in self.metrics if m.name == name), None)
        if found is None:
            known = ", ".join(m.name for m in self.metrics) or "none"
            raise ConfigError(f"the {self.name} task has no metric {name!r}; its metrics: {known}")
        return found

    def bind(self, head: dict[str, Any] | None) -> "Task":
        """This task for one model whose outputs ``head`` describes (a detector's anchors, say);
        tasks whose outputs need no description return themselves."""
        return self

    # -- data and quality -------------------------------------------------------------
    @abstractmethod
    def load(self, source: str, input_spec: "InputSpec") -> "DatasetSplits":
        """Train/test splits of ``source`` for a model taking ``input_spec``."""

    @abstractmethod
    def score(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, float]:
        """Every metric of ``outputs`` (the model's outputs on every item of ``dataset``)."""

    def details(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, Any]:
        """What a report shows beyond the metrics (per-class figures, say)."""
        return {}

    # -- fidelity (edgeopt.measure.fidelity.Judge) --------------------------------------------
    def fidelity(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
        """Task-level agreement of ``candidate`` outputs with the ``reference``'s."""
        return {}

    def broken(self, record: dict[str, Any], reference: list[np.ndarray]) -> str | None:
        """Why outputs with this fidelity ``record`` mean nothing for the task, or None."""
        return None

    # -- training ------------------------------------------------------------------------
    def training_loss(self, label_smoothing: float = 0.0) -> LossFn:
        """``loss(module, inputs, targets)`` for training with ground truth."""
        return lambda module, inputs, targets: self.output_loss(module, module(inputs), targets)

    def output_loss(self, module: "torch.nn.Module", outputs: Any, targets: Any) -> "torch.Tensor":
        """The training loss of ``module``'s ``outputs`` against the ground truth ``targets``."""
        raise ConfigError(f"edgeopt cannot train a model whose task is {self.name!r}")

    def soft_loss(self, student_outputs: Any, teacher_outputs: Any, temperature: float) -> "torch.Tensor":
        """Knowledge distillation's soft term: the student's outputs against the teacher's."""
        raise ConfigError(f"edgeopt cannot distill a model whose task is {self.name!r}")

    def training_data(self, dataset: Any, spec: "InputSpec") -> Any:
        """The training loop's batches: ``len()`` samples, ``batch(index, generator, augment) -> (inputs, targets)``."""
        raise ConfigError(f"edgeopt cannot train a model whose task is {self.name!r}")


class UnknownTask(Task):
    """A model whose outputs edgeopt does not interpret: it exports and benchmarks, no more.

    Its top-1 agreement (of 2-D outputs) is reported, never judged: the outputs may not be logits.
    """

    name = "unknown"

    def fidelity(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
        from edgeopt.tasks.classification import top1_agreement

        return {"top1_agreement": top1_agreement(np.asarray(reference[0]), np.asarray(candidate[0]))}

    def load(self, source: str, input_spec: "InputSpec") -> "DatasetSplits":
        raise ConfigError(f"this model's task is unknown, so edgeopt cannot score it on {source}: train it with "
                          "`edgeopt train` (its checkpoint records the task), or use a torchvision classifier")

    def score(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, float]:
        raise ConfigError("this model's task is unknown, so edgeopt cannot score its outputs")
