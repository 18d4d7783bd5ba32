"""Detection: raw head outputs in, boxes out (decoded by the model's ``DetectionHead``), COCO mAP.

mAP@0.5 (the main metric), mAP@0.5:0.95 and per-class AP come from faster-coco-eval, the
maintained C++ port of the COCO evaluator, on detections decoded at a low score threshold
(``EVAL_SCORE_THRESHOLD``, as COCO evaluation does). Fidelity compares boxes, not logits:
the reference's confident boxes are matched to the candidate's (same class, greedy by IoU),
and a compile that finds none of them is broken — the "mAP 0 after INT8" failure.

A Detection task is bound to one model's head (``bind``): anchors, strides and thresholds
differ per model, so the task that decodes a model's outputs is the one bound to it. One
image's result is its ``Detections`` in the image's own pixels (letterbox undone).

Example:
    >>> from edgeopt.tasks.detection.boxes import DetectionHead
    >>> task = TASK.bind(DetectionHead("yolov8", num_classes=2).to_dict())
    >>> task.main.title, task.head.convention
    ('mAP@0.5', 'yolov8')
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.tasks.detection.boxes import DetectionHead, Detections, box_iou, postprocess
from edgeopt.tasks.detection.data import DetectionDataset, DetectionSplits, load_detection
from edgeopt.core.errors import ConfigError
from edgeopt.core.size import SizeLike, of_shape, size_text
from edgeopt.tasks.base import Metric, Task, per_class_table

if TYPE_CHECKING:
    from pathlib import Path

    from edgeopt.images import Fitted
    from edgeopt.core.spec import InputSpec

EVAL_SCORE_THRESHOLD = 0.01
CONFIDENT = 0.3  # reference boxes at least this confident are the ones a compile must still find
MATCH_IOU = 0.5


class Detection(Task):
    name = "detection"
    metrics = (Metric("map50", "mAP@0.5"), Metric("map", "mAP@0.5:0.95"))
    agreement = None  # FP32 exports match element-wise on the raw outputs; boxes follow
    students = ("edgeopt.models.detectors:ssdlite?width_mult=0.5",)
    teacher_sees_student_input = True

    def __init__(self, head: DetectionHead | None = None) -> None:
        self.head = head

    def bind(self, head: dict[str, Any] | None) -> "Detection":
        if head is None:
            raise ConfigError("this detector has no recorded output convention (anchors, thresholds); build it with "
                              "edgeopt (edgeopt.models.detectors:ssdlite, torchvision:ssdlite320_mobilenet_v3_large) or "
                              "declare its outputs (--outputs yolov8)")
        return Detection(DetectionHead.from_dict(head))

    def _head(self) -> DetectionHead:
        if self.head is None:
            raise ConfigError("detection outputs need the model's head to decode them; use tasks.task_of(model)")
        return self.head

    # -- data and quality -------------------------------------------------------------
    def load(self, source: str, input_spec: "InputSpec") -> DetectionSplits:
        return load_detection(source, size=of_shape(input_spec.shape), channels=input_spec.shape[1])

    def training_splits(self, source: str, *, image_size: "SizeLike | None" = None, input_size: "SizeLike | None" = None,
                        seed: int = 0, extra_train: tuple[str, ...] = ()) -> DetectionSplits:
        if extra_train:
            raise ConfigError("extra training files are for classifiers (.npz of labelled images)")
        return load_detection(source, size=input_size or image_size, seed=seed)

    def new_input(self, splits: DetectionSplits, input_size: "SizeLike | None") -> "InputSpec":
        """The images' own (letterboxed) size, square or not; letterboxed when served too, as the loader did."""
        import dataclasses

        from edgeopt.tasks.base import input_spec_for

        height, width = splits.train.images.shape[1:3]
        spec = input_spec_for(splits.train, size=(width, height))
        return dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, fit="letterbox"))

    def arch_settings(self, arch: str, splits: DetectionSplits, spec: "InputSpec") -> dict[str, int | str]:
        settings = super().arch_settings(arch, splits, spec)
        from edgeopt.core.trust import current_name

        if current_name(arch).startswith("edgeopt.models.detectors:"):  # edgeopt's own detectors place their anchors for the input size
            settings["size"] = size_text(of_shape(spec.shape))
        return settings

    def decode(self, outputs: list[np.ndarray], dataset: DetectionDataset | None = None,
               score_threshold: float | None = None) -> list[Detections]:
        """Detections per image, in the dataset's pixels (a model fed a resized image is scaled back)."""
        head = self._head()
        if score_threshold is not None:
            head = head.with_thresholds(score=score_threshold)
        found = postprocess(outputs, head)
        if dataset is None or not head.image_size[0]:
            return found
        scale_y, scale_x = (dataset.images.shape[1] / head.image_size[0], dataset.images.shape[2] / head.image_size[1])
        if (scale_x, scale_y) == (1.0, 1.0):
            return found
        factor = np.asarray([scale_x, scale_y, scale_x, scale_y], np.float32)
        return [Detections(d.boxes * factor, d.scores, d.labels) for d in found]

    def score(self, outputs: list[np.ndarray], dataset: DetectionDataset) -> dict[str, float]:
        evaluation = coco_evaluation(self.decode(outputs, dataset, EVAL_SCORE_THRESHOLD), dataset)
        return {"map50": evaluation["map50"], "map": evaluation["map"]}

    def details(self, outputs: list[np.ndarray], dataset: DetectionDataset) -> dict[str, Any]:
        """Per-class AP@0.5 and AP@0.5:0.95, and how many boxes were found and expected."""
        found = self.decode(outputs, dataset, EVAL_SCORE_THRESHOLD)
        evaluation = coco_evaluation(found, dataset)
        return {"per_class": evaluation["per_class_ap50"], "per_class_map": evaluation["per_class_ap"],
                "samples": len(dataset), "true_boxes": int(sum(len(b) for b in dataset.boxes)),
                "boxes_over_0.3": int(sum(len(d.above(CONFIDENT)) for d in found)),
                "table": per_class_table({"AP@0.5": evaluation["per_class_ap50"],
                                          "AP@0.5:0.95": evaluation["per_class_ap"]})}

    # -- one image's outputs ---------------------------------------------------------------------
    boxes_tracked = True

    def postprocess(self, outputs: list[np.ndarray]) -> list[Detections]:
        return postprocess(outputs, self._head())

    def results(self, outputs: list[np.ndarray], fitted: "list[Fitted]", score_threshold: float = 0.3) -> list[Any]:
        found = postprocess(outputs, self._head().with_thresholds(score=score_threshold))
        return [Detections(f.to_image(d.boxes), d.scores, d.labels) for d, f in zip(found, fitted)]

    def dataset_frames(self, dataset: DetectionDataset, spec: "InputSpec") -> "list[Fitted]":
        """The loader letterboxed each image from its own size: boxes go back to that, as ``predict``'s do."""
        from edgeopt.images import Fitted, letterbox_geometry

        stored = (dataset.images.shape[2], dataset.images.shape[1])
        to_input = Fitted.stretched(stored, spec)
        frames = []
        for width, height in dataset.sizes:
            scale, _, pad = letterbox_geometry(width, height, stored)
            frames.append(Fitted(to_input.input, (scale, scale), (float(pad[0]), float(pad[1])), (width, height))
                          .then(to_input))
        return frames

    def to_json(self, result: Detections, labels: list[str] | None) -> dict[str, Any]:
        return result.to_dict(labels)

    def draw(self, image: np.ndarray, result: Detections, labels: list[str] | None) -> np.ndarray:
        from edgeopt.tasks.drawing import class_name, draw_boxes

        texts = [f"{class_name(labels, label)} {score:.2f}" for score, label in zip(result.scores, result.labels)]
        return draw_boxes(image, result.boxes, texts, [int(label) for label in result.labels])

    def boxes(self, result: Detections) -> Detections:
        return result

    def above(self, result: Detections, score_threshold: float) -> Detections:
        return result.above(score_threshold)

    def draw_samples(self, outputs: list[np.ndarray], dataset: DetectionDataset, folder: "Path",
                     count: int = 6) -> list[str]:
        """Test images with boxes, their true boxes (green) and the boxes found over ``CONFIDENT`` (red)."""
        from edgeopt.tasks.drawing import FOUND, TRUTH, class_name, draw_boxes, save_image

        found = self.decode(outputs, dataset)
        picked = [i for i in range(len(dataset)) if len(dataset.boxes[i])][:: max(1, len(dataset) // count)][:count]
        names = []
        for index in picked:
            truth, shown = np.asarray(dataset.boxes[index]).reshape(-1, 4), found[index].above(CONFIDENT)
            texts = [""] * len(truth) + [f"{class_name(dataset.classes, label)} {score:.2f}"
                                         for score, label in zip(shown.scores, shown.labels)]
            pixels = draw_boxes(dataset.images[index], np.concatenate([truth, shown.boxes]), texts,
                                [TRUTH] * len(truth) + [FOUND] * len(shown), zoom=2)
            names.append(save_image(pixels, folder / f"samples/{index:04d}.png").relative_to(folder).as_posix())
        return names

    # -- fidelity -------------------------------------------------------------------------
    def fidelity(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
        if [np.shape(r) for r in reference] != [np.shape(c) for c in candidate]:
            return {}
        return match_detections(self.decode(reference, score_threshold=CONFIDENT),
                                self.decode(candidate, score_threshold=CONFIDENT))

    def broken(self, record: dict[str, Any], reference: list[np.ndarray]) -> str | None:
        """A compile that finds none of the reference's confident boxes, where it had several."""
        expected, recall = record.get("reference_boxes", 0), record.get("box_recall")
        if recall is not None and expected >= 5 and recall == 0.0:
            return (f"none of the reference's {expected} boxes over score {CONFIDENT} is found (same class, IoU >= "
                    f"{MATCH_IOU}): the compiled detector finds nothing")
        return None

    # -- training ------------------------------------------------------------------------
    def output_loss(self, module, outputs, targets):
        return detection_loss(module, outputs, targets)

    def soft_loss(self, student_outputs, teacher_outputs, temperature: float):
        """KD for a detector: the per-anchor class distribution (softened) and the teacher's boxes
        where the teacher sees an object (Chen et al. 2017's recipe, without the hint layer)."""
        import torch
        import torch.nn.functional as F

        student_deltas, student_logits = student_outputs
        teacher_deltas, teacher_logits = teacher_outputs
        classes = student_logits.shape[-1]
        student = F.log_softmax(student_logits.reshape(-1, classes) / temperature, dim=1)
        teacher = F.log_softmax(teacher_logits.reshape(-1, classes) / temperature, dim=1)
        soft = F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2
        objectness = 1.0 - torch.softmax(teacher_logits, dim=-1)[..., 0]  # the teacher's "not background"
        boxes = (objectness[..., None] * F.smooth_l1_loss(student_deltas, teacher_deltas, reduction="none")).sum()
        return soft + boxes / objectness.sum().clamp(min=1.0)

    def training_data(self, dataset: DetectionDataset, spec: "InputSpec"):
        from edgeopt.tasks.detection.batches import DetectionBatches

        return DetectionBatches(dataset, spec)


def detection_loss(module, outputs, targets):
    loss = getattr(module, "detection_loss", None)
    if loss is None:
        raise ConfigError(f"edgeopt cannot train {type(module).__name__}: it trains SSD-style detectors "
                          "(edgeopt.models.detectors:ssdlite, torchvision SSD/SSDlite)")
    return loss(outputs, targets)


# -- COCO evaluation -----------------------------------------------------------------------
def coco_results(detections: list[Detections]) -> list[dict[str, Any]]:
    """Detections in the COCO results format (image id = row, bbox x, y, w, h)."""
    results = []
    for image_id, found in enumerate(detections):
        for box, score, label in zip(found.boxes.astype(np.float64), found.scores, found.labels):
            results.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    return results


def coco_evaluation(detections: list[Detections], dataset: DetectionDataset) -> dict[str, Any]:
    """mAP@0.5, mAP@0.5:0.95 and per-class AP from faster-coco-eval (0 where nothing was detected)."""
    from faster_coco_eval import COCO, COCOeval_faster

    if len(detections) != len(dataset):
        raise ConfigError(f"{len(detections)} images of detections for a dataset of {len(dataset)}")
    results = coco_results(detections)
    none = {"map50": 0.0, "map": 0.0, "per_class_ap50": {c: 0.0 for c in dataset.classes},
            "per_class_ap": {c: 0.0 for c in dataset.classes}}
    if not results:
        return none
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(dataset.to_coco())
        evaluator = COCOeval_faster(truth, truth.loadRes(results), iouType="bbox", print_function=lambda *a: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max dets)

    def class_ap(k: int, iou: slice) -> float | None:
        values = precision[iou, :, k, 0, -1]
        values = values[values > -1]
        return float(values.mean()) if values.size else None

    ids = list(evaluator.params.catIds)
    return {"map50": max(0.0, float(evaluator.stats[1])), "map": max(0.0, float(evaluator.stats[0])),
            "per_class_ap50": {dataset.classes[c]: class_ap(i, slice(0, 1)) for i, c in enumerate(ids)},
            "per_class_ap": {dataset.classes[c]: class_ap(i, slice(None)) for i, c in enumerate(ids)}}


def match_detections(reference: list[Detections], candidate: list[Detections]) -> dict[str, Any]:
    """Box recall of ``candidate`` against ``reference`` (same class, IoU >= 0.5, greedy by score),
    the mean IoU and the largest score difference of the matched pairs."""
    matched, expected, ious, score_diffs = 0, 0, [], []
    for ref, got in zip(reference, candidate):
        expected += len(ref)
        if not len(ref) or not len(got):
            continue
        iou = box_iou(ref.boxes, got.boxes) * (ref.labels[:, None] == got.labels[None, :])
        taken = np.zeros(len(got), bool)
        for i in np.argsort(-ref.scores, kind="stable"):
            options = np.where(taken, -1.0, iou[i])
            j = int(options.argmax())
            if options[j] >= MATCH_IOU:
                taken[j] = True
                matched += 1
                ious.append(float(iou[i, j]))
                score_diffs.append(abs(float(ref.scores[i]) - float(got.scores[j])))
    return {"reference_boxes": expected, "box_recall": matched / expected if expected else None,
            "mean_iou": float(np.mean(ious)) if ious else None,
            "max_score_diff": float(np.max(score_diffs)) if score_diffs else None}


TASK = Detection()
