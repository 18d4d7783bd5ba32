"""Detectors end to end, as a user runs them: train, export to INT8 (verified by boxes), predict
without torch, evaluate and search (slow: a detector is trained once per session)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import assert_one_line_error, edgeopt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ort_int8(trained_detector, tmp_path_factory):
    checkpoint, data = trained_detector
    out = tmp_path_factory.mktemp("det-ort") / "int8"
    proc = edgeopt("export", str(checkpoint), "-b", "onnxruntime", "--precision", "int8", "--calibrate", str(data),
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "box recall" in proc.stdout
    return out


def test_trained_detector_scores_well_and_int8_keeps_its_map(trained_detector, ort_int8):
    from edgeopt import evaluate

    checkpoint, data = trained_detector
    fp32 = evaluate(str(checkpoint), str(data))
    int8 = evaluate(str(ort_int8), str(data), reference=str(checkpoint))
    assert fp32["metrics"]["map50"] > 0.5, fp32["metrics"]
    assert set(fp32["per_class"]) == {"square", "frame"}
    assert int8["metrics"]["map50"] > fp32["metrics"]["map50"] - 0.05
    assert int8["fidelity"]["box_recall"] > 0.8
    manifest = json.loads((ort_int8 / "manifest.json").read_text())
    assert manifest["head"]["convention"] == "ssd" and manifest["parity"]["passed"]


PREDICT_WITHOUT_TORCH = """
import json, sys
from edgeopt.runtime.predictor import Predictor
predictor = Predictor(sys.argv[1], score_threshold=0.3)
records = [predictor.predict(path) for path in sys.argv[2:]]
print(json.dumps({"torch": "torch" in sys.modules, "records": records}))
"""


def test_predict_runs_without_torch_and_matches_the_torch_path(trained_detector, ort_int8, tmp_path):
    """The ONNX Runtime artifact, decoded with numpy, finds the boxes the PyTorch model finds
    decoded with torchvision (INT8 vs FP32: matched by IoU). The reference keeps the boxes it is sure of (0.4) and
    predict answers at its own 0.3: a box whose FP32 score sits at the threshold may fall either side in INT8."""
    from PIL import Image

    from edgeopt.tasks.detection.boxes import DetectionHead, box_iou, postprocess_torch
    from edgeopt.images import decode_image, fit_image
    from edgeopt.models.sources import load_model

    checkpoint, data = trained_detector
    images = sorted((data / "images").glob("*.png"))[:48]  # enough sure boxes to compare on a weak detector too
    big = tmp_path / "big.png"  # another size: letterboxed in, boxes mapped back out
    Image.open(images[1]).resize((160, 100)).save(big)
    paths = [*images, big]
    proc = subprocess.run([sys.executable, "-c", PREDICT_WITHOUT_TORCH, str(ort_int8), *map(str, paths)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["torch"] is False
    model = load_model(str(checkpoint))
    head = DetectionHead.from_dict(model.head).with_thresholds(score=0.4)
    matched = total = 0
    for path, record in zip(paths, result["records"]):
        fitted = fit_image(decode_image(path, 1), model.input_spec)
        reference = postprocess_torch(model.reference()(fitted.input), head)[0]
        boxes = fitted.to_image(reference.boxes)
        assert (record["width"], record["height"]) == fitted.size
        got = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
        total += len(boxes)
        if len(boxes) and len(got):
            matched += int((box_iou(boxes, got).max(axis=1) > 0.7).sum())
    assert total >= 10
    assert matched / total >= 0.9, (matched, total)


def test_predict_cli_writes_json_lines_and_annotated_images(ort_int8, trained_detector, tmp_path):
    _, data = trained_detector
    image = sorted((data / "images").glob("*.png"))[1]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    proc = edgeopt("predict", str(ort_int8), str(image), str(bad), "--annotate", str(tmp_path / "drawn"))
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert set(lines[0]) >= {"boxes", "scores", "labels"} and all(label in ("square", "frame") for label in lines[0]["labels"])
    assert "bad.jpg is not a JPEG, PNG, BMP or WebP image" in lines[1]["error"]
    assert (tmp_path / "drawn" / f"{image.stem}.png").is_file()


def test_training_on_a_bad_box_is_one_clear_error(tmp_path):
    from tests.helpers import write_shapes_coco

    data = write_shapes_coco(tmp_path / "bad", count=10)
    coco = json.loads((data / "instances_train.json").read_text())
    coco["annotations"][0]["bbox"] = [60, 60, 30, 30]
    (data / "instances_train.json").write_text(json.dumps(coco))
    proc = edgeopt("train", str(data), "--task", "detection", "--arch", "edgeopt.models.detectors:ssdlite", "--out",
                   str(tmp_path / "x.safetensors"), "--epochs", "1")
    assert_one_line_error(proc, "instances_train.json", f"annotation {coco['annotations'][0]['id']}", "outside")


def test_optimize_searches_a_detector_by_map_and_reports_boxes(trained_detector, tmp_path):
    checkpoint, data = trained_detector
    out = tmp_path / "search"
    proc = edgeopt("optimize", str(checkpoint), "--data", str(data), "-o", str(out), "--backends", "onnxruntime",
                   "--prune-ratios", "0.5", "--epochs", "2", "--resolutions", "none", "--students", "none", "--no-qat",
                   "--calibration-samples", "64", "--max-accuracy-drop", "3", "--budget", "6m")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["baseline"]["metric"] == "map50" and results["baseline"]["task"] == "detection"
    ok = [c for c in results["candidates"] if c["status"] == "ok"]
    assert ok and all("map50" in c["measurement"]["metrics"] for c in ok)
    assert any(c["label"].startswith("prune 0.5") for c in results["candidates"])
    html = (out / "report.html").read_text()
    assert "AP@0.5" in html and "samples/" in html
    assert list((out / "samples").glob("*.png"))
