"""Task: what a model's outputs mean, and how good they are.

A task supplies everything that depends on the kind of model: loading its data, its
quality metrics with their direction (the first-listed main one is what goals and the
Pareto choice use), scoring outputs on a dataset, output fidelity against a reference
(and when outputs are broken for it), the per-class details a report shows, the
training loss — and what one image's outputs mean: ``results`` decodes a batch of raw
outputs into one typed result per image (in the image's own pixels), ``to_json`` is what
``predict``, the server and the stream return for it, ``draw`` shows it on the image.
Everything downstream reads ``{metric: value}`` and asks the task, so nothing assumes a
classifier. Tasks import no torch at module level: serving uses them.

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

from edgeopt.core.errors import ConfigError
from edgeopt.core.spec import InputSpec, Preprocess

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from edgeopt.core.size import SizeLike
    from edgeopt.images import Fitted
    from edgeopt.tasks.classification.data import DatasetSplits, ImageDataset

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
    micro_students: tuple[str, ...] = ()  # the same for a microcontroller's SRAM and flash (none: not offered)
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

    # -- one image's outputs: predict, serve, stream -----------------------------------------
    boxes_tracked: bool = False  # results have boxes a tracker follows (``boxes``): the stream's --line

    def postprocess(self, outputs: list[np.ndarray]) -> Any:
        """What runs after every inference before anything is shown (a detector's decoding and NMS):
        timed with the model, since a deployment pays it on every call."""
        return outputs

    def results(self, outputs: list[np.ndarray], fitted: "list[Fitted]", score_threshold: float = 0.3) -> list[Any]:
        """The raw outputs of a batch (row i from ``fitted[i]``) as one typed result per image, in
        the image's own pixels; ``score_threshold``: the least confidence a shown result needs."""
        return [RawOutputs([np.asarray(out[i]) for out in outputs]) for i in range(len(fitted))]

    def dataset_frames(self, dataset: Any, spec: "InputSpec") -> "list[Fitted]":
        """How each of ``dataset``'s images maps into ``spec``'s input and back to the image's own pixels, for
        ``results`` of outputs on the dataset (``edgeopt eval --predictions``); stored images are their own."""
        from edgeopt.images import Fitted

        height, width = dataset.images.shape[1:3]
        return [Fitted.stretched((width, height), spec)] * len(dataset)

    def to_json(self, result: Any, labels: list[str] | None) -> dict[str, Any]:
        """``result`` as the JSON that ``predict``, the server's ``/predict`` and the stream return."""
        return {"outputs": [out.tolist() for out in result.outputs]}

    def draw(self, image: np.ndarray, result: Any, labels: list[str] | None) -> np.ndarray:
        """A copy of uint8 (H, W, C) ``image`` as RGB with ``result`` drawn on it."""
        from edgeopt.tasks.drawing import as_rgb

        return as_rgb(image)

    def boxes(self, result: Any) -> Any:
        """``result``'s boxes (``edgeopt.tasks.detection.boxes.Detections``) for a tracker, or None."""
        return None

    def above(self, result: Any, score_threshold: float) -> Any:
        """``result`` keeping what scores at least ``score_threshold`` (a result without scores: itself)."""
        return result

    def draw_samples(self, outputs: list[np.ndarray], dataset: Any, folder: "Path", count: int = 6) -> list[str]:
        """A few of ``dataset``'s images with the truth and ``outputs`` drawn, as PNGs in ``folder``
        (names relative to it); tasks with nothing to draw return none."""
        return []

    # -- data and quality -------------------------------------------------------------
    @abstractmethod
    def load(self, source: str, input_spec: "InputSpec") -> "DatasetSplits":
        """Train/test splits of ``source`` for a model taking ``input_spec``."""

    @abstractmethod
    def score(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, float]:
        """Every metric of ``outputs`` (the model's outputs on every item of ``dataset``)."""

    def details(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, Any]:
        """What a report shows beyond the metrics: per-class figures, say, as ``table`` (``per_class_table``)."""
        return {}

    # -- fidelity (edgeopt.measure.fidelity.Judge) --------------------------------------------
    def fidelity(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
        """Task-level agreement of ``candidate`` outputs with the ``reference``'s."""
        return {}

    def broken(self, record: dict[str, Any], reference: list[np.ndarray]) -> str | None:
        """Why outputs with this fidelity ``record`` mean nothing for the task, or None."""
        return None

    # -- training ------------------------------------------------------------------------
    def training_splits(self, source: str, *, image_size: int | None = None, input_size: "SizeLike | None" = None,
                        seed: int = 0, extra_train: tuple[str, ...] = ()) -> "DatasetSplits":
        """Train/test splits of ``source`` to train a new model on (``edgeopt train``): no model, so no
        InputSpec yet; ``image_size`` loads a folder's images at that size, ``input_size`` is the model's."""
        raise ConfigError(f"edgeopt cannot train a model whose task is {self.name!r}")

    def new_input(self, splits: "DatasetSplits", input_size: "SizeLike | None") -> "InputSpec":
        """The InputSpec of a new model trained on ``splits`` (normalised by its training images' statistics)."""
        return input_spec_for(splits.train, size=input_size)

    def arch_settings(self, arch: str, splits: "DatasetSplits", spec: "InputSpec") -> dict[str, int | str]:
        """What a new ``arch`` is built with for ``splits`` (``models.arch_for_dataset``): its outputs
        (one per class) and input channels."""
        return {"classes": len(splits.classes), "channels": spec.shape[1]}

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


@dataclass(frozen=True)
class RawOutputs:
    """One image's outputs, uninterpreted (a task that does not say what they mean)."""

    outputs: list[np.ndarray]


def per_class_table(columns: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """``{column title: {class: value}}`` as the ``table`` a task's details carry, which ``edgeopt eval``
    and the search report show as they are: ``{"columns": [...], "rows": {class: [value per column]}}``."""
    titles = list(columns)
    classes = list(next(iter(columns.values()), {}))
    return {"columns": titles, "rows": {name: [columns[t].get(name) for t in titles] for name in classes}}


class UnknownTask(Task):
    """A model whose outputs edgeopt does not interpret: it exports and benchmarks, no more.

    Its top-1 agreement (of 2-D outputs) is reported, never judged: the outputs may not be logits.
    """

    name = "unknown"

    def fidelity(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
        return {"top1_agreement": top1_agreement(np.asarray(reference[0]), np.asarray(candidate[0]))}

    def load(self, source: str, input_spec: "InputSpec") -> "DatasetSplits":
        raise ConfigError(f"this model's task is unknown, so edgeopt cannot score it on {source}: train it with "
                          "`edgeopt train` (its checkpoint records the task), or use a torchvision classifier")

    def score(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, float]:
        raise ConfigError("this model's task is unknown, so edgeopt cannot score its outputs")


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of rows whose argmax agrees, for (batch, classes) logits; None for other outputs."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        return None
    return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))


def default_preprocess(dataset: "ImageDataset") -> Preprocess:
    """Per-channel mean/std of the training images: the normalisation a model trained here expects."""
    pixels = dataset.images.reshape(-1, dataset.channels).astype(np.float64) / 255.0
    std = np.maximum(pixels.std(axis=0), 1e-3)
    return Preprocess(mean=tuple(float(m) for m in pixels.mean(axis=0)), std=tuple(float(s) for s in std),
                      channels="GRAY" if dataset.channels == 1 else "RGB")


def input_spec_for(dataset: "ImageDataset", preprocess: Preprocess | None = None, size: "SizeLike | None" = None) -> InputSpec:
    """The InputSpec of a model fed this dataset's images, optionally at another ``size`` (a side or (width, height))."""
    from edgeopt.core.size import parse_size

    width, height = parse_size(size) or (dataset.images.shape[2], dataset.images.shape[1])
    return InputSpec((1, dataset.channels, height, width), preprocess=preprocess or default_preprocess(dataset))
