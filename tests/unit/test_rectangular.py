"""Rectangular inputs: a camera's 640x480 or 320x240 frames meet a detector built for that shape
(no square letterbox wasting a quarter of the pixels), and a square letterboxed model still works."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeopt.core.errors import ConfigError
from edgeopt.core.size import parse_size
from edgeopt.core.spec import InputSpec, Preprocess
from edgeopt.images import fit_image, letterbox
from tests.helpers import edgeopt, write_shapes_coco


@pytest.mark.parametrize("text", ["0x10", "320x", "x240", "320x240x3", "-1", "big", "3.5", "100000x100000"])
def test_a_size_that_is_not_one_is_refused_saying_how_to_write_it(text):
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT|at least 1x1|up to 4096"):
        parse_size(text)


def test_a_frame_of_the_inputs_shape_is_only_scaled_and_another_is_letterboxed_into_the_rectangle():
    spec = InputSpec((1, 3, 240, 320), preprocess=Preprocess(mean=(0.0,) * 3, std=(1.0,) * 3, fit="letterbox"))
    camera = np.zeros((480, 640, 3), np.uint8)
    fitted = fit_image(camera, spec)
    assert fitted.input.shape == (1, 3, 240, 320) and fitted.scale == (0.5, 0.5) and fitted.pad == (0.0, 0.0)
    square = np.zeros((300, 300, 3), np.uint8)
    fitted = fit_image(square, spec)
    assert fitted.scale == (0.8, 0.8) and fitted.pad == (40.0, 0.0)  # 240x240 of picture, 40 px grey each side
    np.testing.assert_allclose(fitted.to_image(np.asarray([[40.0, 0.0, 280.0, 240.0]], np.float32)),
                               [[0.0, 0.0, 300.0, 300.0]])
    still_square, scale, pad = letterbox(np.zeros((240, 320, 3), np.uint8), 128)  # the square letterbox of today
    assert still_square.shape == (128, 128, 3) and scale == 0.4 and pad == (0.0, 16.0)


def test_edgeopts_detectors_are_built_for_a_rectangle_and_refuse_sides_they_cannot_take():
    from edgeopt.core.errors import ModelSourceError
    from edgeopt.models.sources import load_model

    model = load_model("edgeopt.models.detectors:ssdlite?num_classes=2&size=320x256&min_ratio=0.05&max_ratio=0.5",
                       input="1x3x256x320")
    head = model.module.detection_head()
    assert head.image_size == (256, 320)
    widths = head.anchors[:, 2] - head.anchors[:, 0]
    assert widths.min() < 0.05 * 320 + 1 and head.anchors[:, 2].max() > 300  # small anchors, and they span the width
    deltas, _ = model.module.eval()(torch.zeros(1, 3, 256, 320))
    assert deltas.shape[1] == len(head.anchors)
    odd = load_model("edgeopt.models.detectors:ssdlite?num_classes=2&size=240x180", input="1x3x180x240")  # 0.75 of 320x240
    assert odd.module.eval()(torch.zeros(1, 3, 180, 240))[0].shape[1] == len(odd.module.anchors)
    with pytest.raises(ModelSourceError, match="at least 64"):
        load_model("edgeopt.models.detectors:ssdlite?size=320x48")
    with pytest.raises(ModelSourceError, match="min_ratio"):
        load_model("edgeopt.models.detectors:ssdlite?size=128&min_ratio=0.5&max_ratio=0.4")
    for hostile in ("size=100000x100000", "size=1e3", "width_mult=1000", "num_classes=10000000"):  # read from a file
        with pytest.raises(ModelSourceError):
            load_model(f"edgeopt.models.detectors:ssdlite?{hostile}")


def test_a_classifier_refuses_a_rectangle_saying_what_it_takes():
    from edgeopt.tasks import get_task
    from edgeopt.tasks.classification.data import load_dataset

    with pytest.raises(ConfigError, match="square input"):
        get_task("classification").new_input(load_dataset("digits"), "64x48")


def test_a_640x480_detector_trains_exports_and_predicts_the_boxes_of_its_pytorch_model(tmp_path):
    """Trained by the CLI at 640x480 from 160x120 images, exported to ONNX Runtime and OpenVINO: the same
    boxes as the PyTorch module on the same frames, in the frame's own pixels."""
    from PIL import Image

    from edgeopt.models.sources import load_model
    from edgeopt.runtime.predictor import Predictor
    from edgeopt.tasks import task_of

    data = write_shapes_coco(tmp_path / "wide", count=40, size=160, height=120)
    checkpoint = tmp_path / "wide.safetensors"
    proc = edgeopt("train", str(data), "--task", "detection", "--arch", "edgeopt.models.detectors:ssd_tiny?width=8",
                   "--input-size", "640x480", "--epochs", "2", "--batch-size", "8", "--out", str(checkpoint),
                   "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    model = load_model(str(checkpoint))
    assert model.input_spec.shape[2:] == (480, 640) and model.head["image_size"] == [480, 640]
    frames = []
    for index, name in enumerate(sorted((data / "images").iterdir())[:3]):
        pixels = np.asarray(Image.open(name).convert("L").resize((640 - 160 * index, 480 - 120 * index)))[..., None]
        frames.append(pixels)  # 640x480, 480x360 and 320x240: each a camera's frame of the input's shape
    task = task_of(model)
    expected = []
    for pixels in frames:
        fitted = fit_image(pixels, model.input_spec)
        with torch.no_grad():
            outputs = [o.numpy() for o in model.module.eval()(torch.from_numpy(fitted.input))]
        expected.append(task.results(outputs, [fitted], score_threshold=0.05)[0])
    assert sum(len(d) for d in expected) > 0, "the trained detector finds nothing to compare"
    for backend in ("onnxruntime", "openvino"):
        out = tmp_path / backend
        proc = edgeopt("export", str(checkpoint), "-b", backend, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert json.loads((out / "manifest.json").read_text())["input"]["shape"][2:] == [480, 640]
        predictor = Predictor(out, score_threshold=0.05)
        for pixels, want in zip(frames, expected):
            _, found = predictor.run_pixels(pixels)
            assert len(found) == len(want), backend
            np.testing.assert_allclose(found.boxes, want.boxes, atol=0.05)
            np.testing.assert_array_equal(found.labels, want.labels)
            assert found.boxes[:, 2].max(initial=0) <= pixels.shape[1] and found.boxes[:, 3].max(initial=0) <= pixels.shape[0]
