"""Detector outputs → boxes: the decoding and NMS that run after a compiled detector.

A compiled detector stops at its raw head outputs (static shapes, quantization-friendly);
the ``DetectionHead`` recorded in its manifest says how to turn them into boxes, so any
artifact decodes itself. Output conventions:

- ``ssd`` — torchvision SSD/SSDlite: box deltas ``(N, A, 4)`` against ``anchors`` (xyxy,
  input pixels) with ``box_weights``, and class logits ``(N, A, 1 + classes)`` whose
  column 0 is the background (softmax).
- ``yolov8`` — one output ``(N, 4 + classes, A)``: boxes as cx, cy, w, h in input pixels,
  class scores already in 0..1 (Ultralytics' ONNX export).
- ``yolov5`` — one output ``(N, A, 5 + classes)``: cx, cy, w, h, objectness, class scores.

Postprocessing is torchvision SSD's: per class, scores over ``score_threshold``, the top
``topk_candidates``, then class-wise NMS at ``iou_threshold`` and the best
``max_detections``. ``postprocess`` is pure numpy (what a torch-free edge install runs);
``postprocess_torch`` is the same with torchvision's ``BoxCoder`` and ``batched_nms``, and
a test keeps the two equal.

Example:
    >>> head = DetectionHead("yolov8", num_classes=2, score_threshold=0.5)
    >>> out = np.zeros((1, 6, 3), np.float32)
    >>> out[0, :4, 0], out[0, 4, 0] = [10, 10, 4, 4], 0.9     # one box of class 0
    >>> found = postprocess([out], head)[0]
    >>> found.boxes.tolist(), found.labels.tolist()
    ([[8.0, 8.0, 12.0, 12.0]], [0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeopt.core.errors import ConfigError

CONVENTIONS = ("ssd", "yolov8", "yolov5")
BBOX_XFORM_CLIP = math.log(1000.0 / 16)  # torchvision's clamp of the predicted log-size


@dataclass(frozen=True, eq=False)
class DetectionHead:
    """How raw outputs of a detector become boxes; see the module docstring."""

    convention: str
    num_classes: int
    image_size: tuple[int, int] = (0, 0)  # (H, W) of the input; boxes are clipped to it
    anchors: np.ndarray | None = field(default=None, repr=False)
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_threshold: float = 0.25  # deployment; COCO evaluation decodes lower
    iou_threshold: float = 0.55
    topk_candidates: int = 300
    max_detections: int = 100

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ConfigError(f"detector output convention {self.convention!r} is not one of {', '.join(CONVENTIONS)}")
        if self.num_classes < 1:
            raise ConfigError("a detector needs at least one class")
        if self.convention == "ssd" and (self.anchors is None or np.ndim(self.anchors) != 2):
            raise ConfigError("an ssd-convention detector needs its anchors (A x 4, xyxy)")
        if not (0.0 <= self.score_threshold < 1.0 and 0.0 < self.iou_threshold <= 1.0):
            raise ConfigError("score_threshold must lie in [0, 1) and iou_threshold in (0, 1]")
        if self.topk_candidates < 1 or self.max_detections < 1:
            raise ConfigError("topk_candidates and max_detections must be positive")

    def with_thresholds(self, score: float | None = None, iou: float | None = None,
                        max_detections: int | None = None) -> "DetectionHead":
        import dataclasses

        return dataclasses.replace(self, score_threshold=self.score_threshold if score is None else score,
                                   iou_threshold=self.iou_threshold if iou is None else iou,
                                   max_detections=max_detections or self.max_detections)

    def to_dict(self) -> dict[str, Any]:
        return {"convention": self.convention, "num_classes": self.num_classes, "image_size": list(self.image_size),
                "anchors": None if self.anchors is None else np.asarray(self.anchors, np.float64).round(4).tolist(),
                "box_weights": list(self.box_weights), "score_threshold": self.score_threshold,
                "iou_threshold": self.iou_threshold, "topk_candidates": self.topk_candidates,
                "max_detections": self.max_detections}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectionHead":
        data = dict(data)
        try:
            if data.get("anchors") is not None:
                data["anchors"] = np.asarray(data["anchors"], dtype=np.float32)
            data["image_size"] = tuple(int(v) for v in data.get("image_size", (0, 0)))
            data["box_weights"] = tuple(float(v) for v in data.get("box_weights", (10.0, 10.0, 5.0, 5.0)))
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the detection head record is malformed ({exc}); export the artifact again") from None


@dataclass(frozen=True, eq=False)
class Detections:
    """One image's detections: ``boxes`` (K, 4) xyxy float32, ``scores`` (K,), ``labels`` (K,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> "Detections":
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready: boxes rounded to 0.001 px, scores to 1e-6 (coarser rounding ties scores and moves mAP), labels named when ``classes`` are given."""
        labels = self.labels.tolist()
        return {"boxes": np.round(self.boxes.astype(np.float64), 3).tolist(),
                "scores": np.round(self.scores.astype(np.float64), 6).tolist(),  # 1e-6: ranking (mAP) survives JSON
                "labels": [classes[i] if classes is not None and 0 <= i < len(classes) else i for i in labels]}


# -- candidates: raw outputs -> (boxes, scores) per anchor ---------------------------
def candidates(outputs: Sequence[np.ndarray], head: DetectionHead) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, A, 4) xyxy and per-class scores (N, A, classes) from a batch of raw outputs."""
    if head.convention == "ssd":
        if len(outputs) != 2:
            raise ConfigError(f"an ssd detector has 2 outputs (box deltas, class logits), got {len(outputs)}")
        deltas, logits = (np.asarray(o, dtype=np.float32) for o in outputs)
        boxes = decode_deltas(deltas, np.asarray(head.anchors, np.float32), head.box_weights)
        return boxes, softmax(logits)[..., 1:]
    if len(outputs) != 1:
        raise ConfigError(f"a {head.convention} detector has 1 output, got {len(outputs)}")
    raw = np.asarray(outputs[0], dtype=np.float32)
    if head.convention == "yolov8":
        raw = raw.transpose(0, 2, 1)  # (N, A, 4 + classes)
        scores = raw[..., 4:]
    else:
        scores = raw[..., 5:] * raw[..., 4:5]
    if scores.shape[-1] != head.num_classes:
        raise ConfigError(f"the detector's output has {scores.shape[-1]} class scores, its head says {head.num_classes}")
    return cxcywh_to_xyxy(raw[..., :4]), scores


def decode_deltas(deltas: np.ndarray, anchors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """torchvision ``BoxCoder.decode_single``, batched: deltas (N, A, 4) against anchors (A, 4)."""
    wx, wy, ww, wh = weights
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    centre_x, centre_y = anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = np.minimum(deltas[..., 2] / ww, BBOX_XFORM_CLIP)
    dh = np.minimum(deltas[..., 3] / wh, BBOX_XFORM_CLIP)
    x, y = dx * widths + centre_x, dy * heights + centre_y
    half_w, half_h = 0.5 * np.exp(dw) * widths, 0.5 * np.exp(dh) * heights
    return np.stack([x - half_w, y - half_h, x + half_w, y + half_h], axis=-1).astype(np.float32)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half = boxes[..., 2:4] / 2
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# -- postprocess (numpy) --------------------------------------------------------------
def postprocess(outputs: Sequence[np.ndarray], head: DetectionHead) -> list[Detections]:
    """Every image's detections from a batch of raw outputs (numpy only)."""
    boxes, scores = candidates(outputs, head)
    return [_image_detections(b, s, head) for b, s in zip(boxes, scores)]


def _image_detections(boxes: np.ndarray, scores: np.ndarray, head: DetectionHead) -> Detections:
    height, width = head.image_size
    if height and width:
        boxes = np.stack([boxes[:, 0].clip(0, width), boxes[:, 1].clip(0, height),
                          boxes[:, 2].clip(0, width), boxes[:, 3].clip(0, height)], axis=1)
    kept_boxes, kept_scores, kept_labels = [], [], []
    for label in range(scores.shape[1]):
        score = scores[:, label]
        index = np.flatnonzero(score > head.score_threshold)
        if len(index) > head.topk_candidates:
            # torchvision's topk: the highest scores, ties by lower index
            index = index[np.argsort(-score[index], kind="stable")[: head.topk_candidates]]
        kept_boxes.append(boxes[index])
        kept_scores.append(score[index])
        kept_labels.append(np.full(len(index), label, np.int64))
    all_boxes, all_scores, all_labels = (np.concatenate(kept_boxes), np.concatenate(kept_scores),
                                         np.concatenate(kept_labels))
    keep = batched_nms(all_boxes, all_scores, all_labels, head.iou_threshold, limit=head.max_detections)
    return Detections(all_boxes[keep].astype(np.float32), all_scores[keep].astype(np.float32), all_labels[keep])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                limit: int | None = None) -> np.ndarray:
    """Indices kept by class-wise greedy NMS, highest score first (torchvision's ``batched_nms``).

    ``limit`` stops after that many kept boxes: the result is the same prefix, found in a
    fraction of the time when thousands of low-score candidates remain.
    """
    if len(boxes) == 0:
        return np.empty(0, np.int64)
    # torchvision's trick: shift every class to its own region so one NMS never mixes classes
    shifted = boxes + labels.astype(np.float32)[:, None] * (float(boxes.max()) + 1.0)
    areas = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order) and (limit is None or len(keep) < limit):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        top_left = np.maximum(shifted[best, :2], shifted[rest, :2])
        bottom_right = np.minimum(shifted[best, 2:], shifted[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


# -- postprocess (torch) --------------------------------------------------------------
def postprocess_torch(outputs: Sequence[Any], head: DetectionHead) -> list[Detections]:
    """The same as ``postprocess`` with torchvision's ``BoxCoder``, ``clip_boxes_to_image`` and ``batched_nms``."""
    import torch
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.ops import boxes as box_ops

    tensors = [torch.as_tensor(np.asarray(o, dtype=np.float32)) for o in outputs]
    if head.convention == "ssd":
        coder = BoxCoder(head.box_weights)
        anchors = torch.as_tensor(np.asarray(head.anchors, np.float32))
        decoded = torch.stack([coder.decode_single(deltas, anchors) for deltas in tensors[0]])
        scores = torch.softmax(tensors[1], dim=-1)[..., 1:]
    else:
        boxes, scores = candidates(outputs, head)  # a transpose and a product: nothing for torch to add
        decoded, scores = torch.as_tensor(boxes), torch.as_tensor(scores)
    found = []
    for boxes, image_scores in zip(decoded, scores):
        if head.image_size[0] and head.image_size[1]:
            boxes = box_ops.clip_boxes_to_image(boxes, head.image_size)
        parts = []
        for label in range(image_scores.shape[1]):
            score = image_scores[:, label]
            index = torch.where(score > head.score_threshold)[0]
            top = torch.topk(score[index], min(head.topk_candidates, len(index)))
            parts.append((boxes[index[top.indices]], top.values, torch.full_like(top.values, label, dtype=torch.int64)))
        all_boxes, all_scores, all_labels = (torch.cat([p[i] for p in parts]) for i in range(3))
        keep = box_ops.batched_nms(all_boxes, all_scores, all_labels, head.iou_threshold)[: head.max_detections]
        found.append(Detections(all_boxes[keep].numpy(), all_scores[keep].numpy(), all_labels[keep].numpy()))
    return found
