"""Run an artifact on images, fed exactly as its manifest says: ``edgeopt predict``.

An image is decoded (``edgeopt.images``: JPEG, PNG, BMP or WebP only), fitted to the input as
the artifact's InputSpec records (stretched, or letterboxed for detectors trained here), run,
and handed to the artifact's task (``edgeopt.tasks.task_of``), which decodes the outputs into
its result in the image's own pixels and says how that reads as JSON and looks drawn. For
ONNX Runtime and OpenVINO artifacts nothing here imports torch: this is what an edge box runs.

Example:
    >>> predictor = Predictor("out/neu-det-ort-int8")                       # doctest: +SKIP
    >>> predictor.predict("crazing_1.jpg")["labels"]                           # doctest: +SKIP
    ['crazing']
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgeopt.core.artifact import Artifact
from edgeopt.images import as_channels, decode_image, fit_image
from edgeopt.tasks import task_of

DEFAULT_DISPLAY_THRESHOLD = 0.3


class Predictor:
    """An artifact loaded once, predicting one image at a time."""

    def __init__(self, artifact: str | os.PathLike, threads: int | None = None,
                 score_threshold: float = DEFAULT_DISPLAY_THRESHOLD) -> None:
        from edgeopt.backends import get_backend

        self.artifact = Artifact.open(artifact)
        self.task = task_of(self.artifact)  # before loading: an unknown task is a quick, clear error
        self.session = get_backend(self.artifact.backend).load(self.artifact, threads=threads)
        self.spec = self.artifact.input_spec
        self.labels = self.artifact.manifest.get("labels") or None
        self.score_threshold = score_threshold

    def predict(self, image_path: str | os.PathLike) -> dict[str, Any]:
        """One JSON-ready record: the image, its size and the task's result (boxes, or a classifier's top 5)."""
        return self.run(image_path)[1]

    def run(self, image_path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any], Any]:
        """The decoded image, its record, and the task's result."""
        image = decode_image(image_path, self.spec.shape[1])
        record, result = self.run_pixels(image)
        return image, {"image": str(image_path), **record}, result

    def run_pixels(self, image: np.ndarray) -> tuple[dict[str, Any], Any]:
        """A decoded uint8 (H, W, C) image's record and the task's result."""
        return predict_pixels(self.session, self.spec, self.task, self.labels, image, self.score_threshold)

    def draw(self, image: np.ndarray, result: Any) -> np.ndarray:
        """``image`` (RGB) with ``result`` drawn as the task draws it."""
        return self.task.draw(image, result, self.labels)


def predict_pixels(session, spec, task, labels: list[str] | None, image: np.ndarray,
                   score_threshold: float) -> tuple[dict[str, Any], Any]:
    """One uint8 RGB or gray (H, W, C) image through ``session``, fitted to ``spec`` and decoded by ``task``: its
    record and the task's result (what ``predict`` and ``stream`` give for the same pixels)."""
    fitted = fit_image(as_channels(image, spec.shape[1]), spec)
    result = task.results(session.run([fitted.input]), [fitted], score_threshold)[0]
    return describe(task, result, fitted.size, labels), result


def describe(task, result: Any, size: tuple[int, int], labels: list[str] | None) -> dict[str, Any]:
    """The record of one image: its size, and its result as the task writes it."""
    return {"width": size[0], "height": size[1], **task.to_json(result, labels)}
