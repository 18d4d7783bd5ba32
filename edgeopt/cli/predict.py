"""``edgeopt predict``: an artifact on image files, one JSON line per image (torch-free for ONNX Runtime/OpenVINO)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, PluginOption, ThreadsOption, TrustModelOption


@app.command("predict")
def predict_command(
    artifact: Path = typer.Argument(..., help="An artifact folder (from export, quantize, build or optimize)."),
    images: List[Path] = typer.Argument(..., help="Image files: JPEG, PNG, BMP or WebP (no other format is decoded)."),
    score_threshold: float = typer.Option(0.3, "--score-threshold", help="Detectors: report boxes at least this confident."),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write each image with its result drawn (boxes, or a classifier's label) into this folder."),
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Predict IMAGES with ARTIFACT: boxes, scores and labels (detectors) or the top 5 (classifiers) as JSON lines.

    An image that cannot be read gets a line with its error; the exit code is then 1.
    """
    from edgeopt.core.errors import EdgeoptError
    from edgeopt.runtime.predictor import Predictor
    from edgeopt.tasks.drawing import save_image

    predictor = Predictor(artifact, threads=threads, score_threshold=score_threshold)
    failed = 0
    for image in images:
        try:
            pixels, record, result = predictor.run(image)
        except EdgeoptError as exc:
            failed += 1
            record, result = {"image": str(image), "error": str(exc)}, None
        sys.stdout.write(json.dumps(record) + "\n")
        if annotate is not None and result is not None:
            save_image(predictor.draw(pixels, result), annotate / f"{image.stem}.png")
    sys.stdout.flush()
    if failed:
        raise typer.Exit(1)
