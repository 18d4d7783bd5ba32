"""A task defined outside edgeopt (tests/plugins/digit_value.py: regression, the value of a handwritten
digit) goes the whole way — trained, built, evaluated, served (`/infer` and `/predict`) and streamed —
through the command line, with `--plugin` and no edit to edgeopt."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import RunningServer, edgeopt

PLUGIN = ("--plugin", "tests.plugins.digit_value")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def value_model(tmp_path_factory):
    """A tiny CNN trained for the plugin task, and its ONNX Runtime artifact."""
    out = tmp_path_factory.mktemp("digit-value")
    checkpoint = out / "value.safetensors"
    trained = edgeopt("train", "digits", "--arch", "edgeopt.models.zoo:tiny_cnn", "--out", str(checkpoint), "--task",
                      "digit_value", "--epochs", "6", "--lr", "0.01", "--no-augment", *PLUGIN, cwd=ROOT)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "mean absolute error" in trained.stdout
    artifact = out / "ort"
    exported = edgeopt("export", str(checkpoint), "--backend", "onnxruntime", "--out", str(artifact), *PLUGIN, cwd=ROOT)
    assert exported.returncode == 0, exported.stderr[-2000:]
    return checkpoint, artifact


def _digit_png(index: int) -> bytes:
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = np.clip(load_digits().images[index] * 16.0, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_plugin_task_trains_builds_and_evaluates_with_its_own_metric(value_model, tmp_path):
    checkpoint, artifact = value_model
    assert json.loads((artifact / "manifest.json").read_text())["task"] == "digit_value"
    report_path = tmp_path / "eval.json"
    evaluated = edgeopt("eval", str(artifact), "--data", "digits", "--json", str(report_path), *PLUGIN, cwd=ROOT)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    mae = json.loads(report_path.read_text())["metrics"]["mae"]
    assert mae < 2.0  # guessing the mean (4.5) everywhere scores 2.5
    without = edgeopt("eval", str(artifact), "--data", "digits", cwd=ROOT)  # the artifact names a task: not imported
    assert without.returncode != 0 and "--plugin" in without.stderr and "Traceback" not in without.stderr


def test_a_plugin_task_is_served_and_streamed_as_predict_answers(value_model, tmp_path):
    _, artifact = value_model
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(5):
        (folder / f"{index}.png").write_bytes(_digit_png(index))
    predicted = edgeopt("predict", str(artifact), *sorted(map(str, folder.glob("*.png"))), *PLUGIN, cwd=ROOT)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    by_image = {Path(r["image"]).name: r["value"] for r in map(json.loads, predicted.stdout.splitlines())}
    assert len(by_image) == 5 and all(isinstance(v, float) for v in by_image.values())

    streamed = edgeopt("stream", str(folder), str(artifact), *PLUGIN, cwd=ROOT)
    assert streamed.returncode == 0, streamed.stderr[-2000:]
    assert {Path(r["image"]).name: r["value"] for r in map(json.loads, streamed.stdout.splitlines())} == by_image

    env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with RunningServer(f"value={artifact}", *PLUGIN, env=env) as running:
        answer = httpx.post(f"{running.url}/v2/models/value/predict", content=_digit_png(3),
                            headers={"content-type": "image/png"}, timeout=30).json()
        assert answer["value"] == by_image["3.png"]
        metadata = httpx.get(f"{running.url}/v2/models/value", timeout=10).json()
        assert metadata["parameters"]["task"] == "digit_value"
        body = {"inputs": [{"name": metadata["inputs"][0]["name"], "datatype": "FP32",
                            "shape": [1, *metadata["inputs"][0]["shape"][1:]],
                            "data": np.zeros(int(np.prod(metadata["inputs"][0]["shape"][1:]))).tolist()}]}
        raw = httpx.post(f"{running.url}/v2/models/value/infer", json=body, timeout=30).json()
        assert raw["outputs"][0]["shape"] == [1, 1]
