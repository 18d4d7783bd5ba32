"""Run an artifact on image files, fed exactly as its manifest says: ``edgeopt predict``.

An image is decoded (``edgeopt.images``: JPEG, PNG, BMP or WebP only), fitted to the input as the artifact's InputSpec records
(stretched, or letterboxed for detectors trained here), normalised, run, and — for a
detector — decoded with the manifest's head and mapped back to the image's own pixels. For
ONNX Runtime and OpenVINO artifacts nothing here imports torch: this is what an edge box runs.

Example:
    >>> predictor = Predictor("out/neu-det-ort-int8")                       # doctest: +SKIP
    >>> predictor.predict("crazing_1.jpg")["labels"]                           # doctest: +SKIP
    ['crazing']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifact import Artifact
from edgeopt.boxes import DetectionHead, Detections, postprocess
from edgeopt.data import to_input
from edgeopt.errors import ConfigError
from edgeopt.images import decode_image
from edgeopt.spec import InputSpec

DEFAULT_DISPLAY_THRESHOLD = 0.3


@dataclass(frozen=True)
class Fitted:
    """An image fitted to the input, and how to map the input's pixels back to the image's."""

    input: np.ndarray  # (1, C, H, W) float32
    scale: tuple[float, float]  # input px per image px (x, y)
    pad: tuple[float, float]  # input px of padding (x, y)
    size: tuple[int, int]  # the image's (width, height)

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        offset = np.asarray([*self.pad, *self.pad], np.float32)
        scale = np.asarray([*self.scale, *self.scale], np.float32)
        width, height = self.size
        return np.clip((boxes - offset) / scale, 0, [width, height, width, height]).astype(np.float32)


def fit_image(image: np.ndarray, spec: InputSpec) -> Fitted:
    """``image`` (H, W, C) as the model's input batch of one, stretched or letterboxed as ``spec`` says."""
    from PIL import Image

    from edgeopt.detection_data import letterbox

    height, width = spec.shape[2:4]
    size = (image.shape[1], image.shape[0])
    if spec.preprocess is not None and spec.preprocess.fit == "letterbox":
        if height != width:
            raise ConfigError(f"letterboxing needs a square input, this artifact takes {width}x{height}")
        fitted, scale, pad = letterbox(image, height)
        return Fitted(to_input(fitted[None], spec), (scale, scale), pad, size)
    if image.shape[:2] != (height, width):
        mode = "L" if image.shape[-1] == 1 else "RGB"
        resized = np.asarray(Image.fromarray(image.squeeze(-1) if mode == "L" else image, mode).resize(
            (width, height), Image.BILINEAR))
        fitted = resized[..., None] if resized.ndim == 2 else resized
    else:
        fitted = image
    return Fitted(to_input(fitted[None], spec), (width / size[0], height / size[1]), (0.0, 0.0), size)


class Predictor:
    """An artifact loaded once, predicting one image at a time."""

    def __init__(self, artifact: str | os.PathLike, threads: int | None = None,
                 score_threshold: float = DEFAULT_DISPLAY_THRESHOLD) -> None:
        from edgeopt.backends import get_backend

        self.artifact = Artifact.open(artifact)
        self.session = get_backend(self.artifact.backend).load(self.artifact, threads=threads)
        self.spec = self.artifact.input_spec
        self.labels = self.artifact.manifest.get("labels") or None
        head = self.artifact.manifest.get("head")
        self.head = DetectionHead.from_dict(head).with_thresholds(score=score_threshold) if head else None
        if self.head is None and self.artifact.manifest.get("task") == "detection":
            raise ConfigError(f"{artifact} is a detector without a recorded output convention; export it again")

    def predict(self, image_path: str | os.PathLike) -> dict[str, Any]:
        """One JSON-ready record: the image, and its boxes, scores and labels (or a classifier's top 5)."""
        return self.run(image_path)[1]

    def run(self, image_path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any], Detections | None]:
        """The decoded image, its record, and (for a detector) its detections in the image's pixels."""
        image = decode_image(image_path, self.spec.shape[1])
        record, found = self.run_pixels(image)
        return image, {"image": str(image_path), **record}, found

    def run_pixels(self, image: np.ndarray) -> tuple[dict[str, Any], Detections | None]:
        """A decoded uint8 (H, W, C) image's record and (for a detector) its detections."""
        fitted = fit_image(image, self.spec)
        return interpret(self.session.run([fitted.input]), fitted, self.head, self.labels)


def interpret(outputs: list[np.ndarray], fitted: Fitted, head: DetectionHead | None,
              labels: list[str] | None) -> tuple[dict[str, Any], Detections | None]:
    """One image's raw outputs (batch of one) as a JSON-ready record, and its detections in the image's pixels."""
    record: dict[str, Any] = {"width": fitted.size[0], "height": fitted.size[1]}
    if head is None:
        return {**record, **classes_of(outputs[0][0], labels)}, None
    found = postprocess(outputs, head)[0]
    found = Detections(fitted.to_image(found.boxes), found.scores, found.labels)
    return {**record, **found.to_dict(labels)}, found


def classes_of(logits: np.ndarray, labels: list[str] | None) -> dict[str, Any]:
    """A classifier's top 5 (softmax) for one sample, named by ``labels``."""
    if logits.ndim != 1:
        return {"outputs": [np.asarray(o).tolist() for o in logits]}
    shifted = np.exp(logits - logits.max())
    probabilities = shifted / shifted.sum()
    top = np.argsort(-probabilities)[:5]
    names = [labels[i] if labels and i < len(labels) else int(i) for i in top]
    return {"label": names[0], "score": round(float(probabilities[top[0]]), 4),
            "top": [[n, round(float(probabilities[i]), 4)] for n, i in zip(names, top)]}


PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def annotate(image: np.ndarray, detections: Detections, classes: list[str] | None, out: Path) -> Path:
    """``image`` with its boxes drawn and labelled (a colour per class), written to ``out`` (PNG/JPEG by suffix)."""
    canvas, draw = _canvas(image, 1)
    for box, score, label in zip(detections.boxes, detections.scores, detections.labels):
        _box(draw, box, f"{_name(classes, label)} {score:.2f}", PALETTE[int(label) % len(PALETTE)])
    return _save(canvas, out)


def draw_comparison(image: np.ndarray, truth: np.ndarray, found: Detections, classes: list[str] | None, out: Path,
                    score_threshold: float = DEFAULT_DISPLAY_THRESHOLD, zoom: int = 2) -> Path:
    """``image`` with its true boxes (green) and the detections over ``score_threshold`` (red), to ``out``."""
    canvas, draw = _canvas(image, zoom)
    for box in truth:
        _box(draw, np.asarray(box) * zoom, "", (40, 200, 40))
    shown = found.above(score_threshold)
    for box, score, label in zip(shown.boxes, shown.scores, shown.labels):
        _box(draw, box * zoom, f"{_name(classes, label)} {score:.2f}", (230, 30, 30))
    return _save(canvas, out)


def _canvas(image: np.ndarray, zoom: int):
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).convert("RGB")
    if zoom != 1:
        canvas = canvas.resize((canvas.width * zoom, canvas.height * zoom), Image.NEAREST)
    return canvas, ImageDraw.Draw(canvas)


def _box(draw, box, text: str, colour) -> None:
    draw.rectangle([float(v) for v in box], outline=colour, width=2)
    if text:
        draw.text((float(box[0]) + 3, float(box[1]) + 2), text, fill=colour)


def _name(classes: list[str] | None, label) -> str:
    return classes[int(label)] if classes and 0 <= int(label) < len(classes) else str(int(label))


def _save(canvas, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
