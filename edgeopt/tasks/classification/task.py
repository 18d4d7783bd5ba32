"""Classification: logits in, top-1 and top-5 on labelled images, top-1 agreement as fidelity;
one image's result is its class probabilities, shown as its top 5.

Example:
    >>> logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]])
    >>> TASK.score([logits], type("D", (), {"labels": np.array([0, 1])})())["top1"]
    0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.tasks.classification.data import DatasetSplits, load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.core.spec import InputSpec
from edgeopt.tasks.base import LossFn, Metric, RawOutputs, Task, per_class_table, top1_agreement

if TYPE_CHECKING:
    from edgeopt.core.size import SizeLike
    from edgeopt.images import Fitted

TOP = 5  # classes a result lists


@dataclass(frozen=True)
class ClassScores:
    """One image's class probabilities (softmax of its logits)."""

    probabilities: np.ndarray

    def top(self, count: int = TOP) -> list[tuple[int, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:count]
        return [(int(i), float(self.probabilities[i])) for i in order]


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax is the label."""
    return float(np.mean(np.asarray(logits).argmax(axis=1) == labels))


def soft_target_loss(student_logits, teacher_logits, temperature: float):
    """T^2 * KL(teacher || student) on temperature-softened distributions, averaged per sample
    (Hinton et al. 2015); the T^2 keeps the soft term's gradient scale independent of T."""
    import torch.nn.functional as F

    student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


class Classification(Task):
    name = "classification"
    metrics = (Metric("top1", "top-1"), Metric("top5", "top-5"))
    agreement = "top1_agreement"
    students = ("torchvision:mobilenet_v2",)
    # A microcontroller's: plain ReLU CNNs of a few thousand to a hundred thousand weights, and MobileNetV2 at its
    # smallest published width (0.35, as MCUNet's baselines), all int8 end to end in TFLM
    micro_students = ("edgeopt.models.zoo:micro_cnn?width=8", "edgeopt.models.zoo:micro_cnn?width=16&depth=4",
                      "torchvision:mobilenet_v2?width_mult=0.35")

    def load(self, source: str, input_spec: InputSpec) -> DatasetSplits:
        # an ImageFolder tree is loaded at the model's image size
        size = input_spec.shape[-1] if len(input_spec.shape) == 4 else None
        return load_dataset(source, image_size=size)

    def training_splits(self, source: str, *, image_size: int | None = None, input_size: "SizeLike | None" = None,
                        seed: int = 0, extra_train: tuple[str, ...] = ()) -> DatasetSplits:
        return load_dataset(source, extra_train=extra_train, image_size=image_size, seed=seed)

    def new_input(self, splits: DatasetSplits, input_size: "SizeLike | None") -> InputSpec:
        """Classifiers here take a square input (their images are loaded square); one number, not WxH."""
        from edgeopt.core.size import parse_size

        size = parse_size(input_size)
        if size is not None and size[0] != size[1]:
            raise ConfigError(f"a classifier takes a square input; give --input-size one number, not "
                              f"{size[0]}x{size[1]} (rectangular inputs are for detectors)")
        return super().new_input(splits, input_size)

    def score(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, float]:
        logits, labels = np.asarray(outputs[0]), np.asarray(dataset.labels)
        k = min(5, logits.shape[1])
        top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        return {"top1": top1_accuracy(logits, labels), "top5": float(np.mean((top5 == labels[:, None]).any(axis=1)))}

    def details(self, outputs: list[np.ndarray], dataset: Any) -> dict[str, Any]:
        """Per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
        classes = list(dataset.classes)
        predicted = np.asarray(outputs[0]).argmax(axis=1)
        confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(confusion, (dataset.labels, predicted), 1)
        per_class = {name: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None
                     for i, name in enumerate(classes)}
        return {"per_class": per_class, "confusion": confusion.tolist(), "samples": int(len(dataset.labels)),
                "table": per_class_table({"top-1": per_class})}

    # -- one image's outputs ---------------------------------------------------------------------
    def results(self, outputs: list[np.ndarray], fitted: "list[Fitted]", score_threshold: float = 0.3) -> list[Any]:
        logits = np.asarray(outputs[0], np.float64)
        if logits.ndim != 2:  # not one row of logits per image: shown as they are
            return super().results(outputs, fitted, score_threshold)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return [ClassScores(row / row.sum()) for row in shifted]

    def to_json(self, result: Any, labels: list[str] | None) -> dict[str, Any]:
        if isinstance(result, RawOutputs):
            return super().to_json(result, labels)
        top = [[labels[i] if labels and i < len(labels) else i, round(p, 4)] for i, p in result.top()]
        return {"label": top[0][0], "score": top[0][1], "top": top}

    def draw(self, image: np.ndarray, result: Any, labels: list[str] | None) -> np.ndarray:
        from edgeopt.tasks.drawing import as_rgb, caption

        if isinstance(result, RawOutputs):
            return as_rgb(image)
        shown = self.to_json(result, labels)
        return caption(image, f"{shown['label']} {shown['score']:.2f}")

    def fidelity(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
        return {"top1_agreement": top1_agreement(np.asarray(reference[0]), np.asarray(candidate[0]))}

    def broken(self, record: dict[str, Any], reference: list[np.ndarray]) -> str | None:
        """Predictions that agree with the reference no more often than a random guess would."""
        agreement = record.get("top1_agreement")
        classes = reference[0].shape[1] if reference[0].ndim == 2 else 0
        if agreement is None or classes < 3 or len(reference[0]) < 2 * classes:
            return None  # too few classes or samples for chance to be told apart from a real model
        if agreement <= 1.0 / classes:
            return f"top-1 agreement {agreement:.3f} is no better than chance ({classes} classes)"
        return None

    def training_loss(self, label_smoothing: float = 0.0) -> LossFn:
        import torch.nn.functional as F

        def loss(module, inputs, labels):
            return F.cross_entropy(module(inputs), labels, label_smoothing=label_smoothing)

        return loss

    def output_loss(self, module, outputs, labels):
        import torch.nn.functional as F

        return F.cross_entropy(outputs, labels)

    def soft_loss(self, student_outputs, teacher_outputs, temperature: float):
        if student_outputs.shape != teacher_outputs.shape:
            raise ConfigError(f"student outputs {tuple(student_outputs.shape)} but teacher "
                              f"{tuple(teacher_outputs.shape)}; logit distillation needs the same outputs (same classes)")
        return soft_target_loss(student_outputs, teacher_outputs, temperature)

    def training_data(self, dataset, spec: InputSpec):
        from edgeopt.tasks.classification.batches import ClassificationBatches

        return ClassificationBatches(dataset, spec)


TASK = Classification()
