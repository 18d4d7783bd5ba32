"""Detection: decoding and NMS (numpy = torchvision), COCO mAP (= pycocotools run directly),
annotation checks, augmentation that moves boxes, and the head kept in float by INT8."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeopt.tasks.detection.boxes import DetectionHead, Detections, postprocess, postprocess_torch
from edgeopt.tasks.detection.data import DetectionDataset, load_detection
from edgeopt.core.errors import ConfigError
from edgeopt.tasks import get_task, task_of
from edgeopt.tasks.detection.task import coco_evaluation, coco_results
from tests.helpers import write_shapes_coco


def _ssd_outputs(anchors: int, classes: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, anchors, 4)).astype(np.float32) * 0.5,
            (rng.standard_normal((3, anchors, classes + 1)) * 3).astype(np.float32)]


def _ssd_head(anchors: int, classes: int, seed: int = 0, **kwargs) -> DetectionHead:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (anchors, 2))
    wh = rng.uniform(4, 50, (anchors, 2))
    return DetectionHead("ssd", classes, image_size=(128, 128), anchors=np.concatenate([xy, xy + wh], 1).astype(np.float32),
                         **kwargs)


def _same(a: list[Detections], b: list[Detections]) -> None:
    assert [len(x) for x in a] == [len(y) for y in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3)
        np.testing.assert_allclose(x.scores, y.scores, atol=1e-6)
        np.testing.assert_array_equal(x.labels, y.labels)


@pytest.mark.parametrize("score", [0.01, 0.3])
def test_numpy_postprocess_equals_torchvision_for_ssd(score):
    head = _ssd_head(600, 6, score_threshold=score, max_detections=100)
    outputs = _ssd_outputs(600, 6)
    found = postprocess(outputs, head)
    assert any(len(d) for d in found)
    _same(found, postprocess_torch(outputs, head))


@pytest.mark.parametrize("convention", ["yolov8", "yolov5"])
def test_numpy_postprocess_equals_torchvision_for_yolo_layouts(convention):
    rng = np.random.default_rng(1)
    anchors, classes = 300, 3
    centre, size = rng.uniform(10, 100, (1, anchors, 2)), rng.uniform(5, 40, (1, anchors, 2))
    scores = rng.uniform(0, 1, (1, anchors, classes + (1 if convention == "yolov5" else 0)))
    raw = np.concatenate([centre, size, scores], axis=-1).astype(np.float32)
    outputs = [raw.transpose(0, 2, 1).copy() if convention == "yolov8" else raw]
    head = DetectionHead(convention, classes, image_size=(128, 128), score_threshold=0.2)
    found = postprocess(outputs, head)
    assert len(found[0]) > 0
    _same(found, postprocess_torch(outputs, head))


def test_a_head_record_survives_json_and_refuses_a_malformed_one():
    head = _ssd_head(10, 2)
    again = DetectionHead.from_dict(json.loads(json.dumps(head.to_dict())))
    np.testing.assert_allclose(again.anchors, head.anchors, atol=1e-4)
    with pytest.raises(ConfigError, match="anchors"):
        DetectionHead("ssd", 2)
    with pytest.raises(ConfigError, match="convention"):
        DetectionHead("retina", 2)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return load_detection(str(write_shapes_coco(tmp_path_factory.mktemp("shapes"), count=60)), size=64)


def _noisy_detections(dataset: DetectionDataset, seed: int = 0) -> list[Detections]:
    """The truth moved a few pixels, with made-up scores, plus one false box per image."""
    rng = np.random.default_rng(seed)
    found = []
    for boxes, labels in zip(dataset.boxes, dataset.box_labels):
        moved = boxes + rng.normal(0, 2.0, boxes.shape).astype(np.float32)
        false = np.asarray([[5, 5, 20, 20]], np.float32)
        found.append(Detections(np.concatenate([moved, false]), rng.uniform(0.2, 1.0, len(boxes) + 1).astype(np.float32),
                                np.concatenate([labels, [1]]).astype(np.int64)))
    return found


def test_map_equals_pycocotools_run_directly_on_the_same_predictions(shapes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    test = shapes.test
    detections = _noisy_detections(test)
    ours = coco_evaluation(detections, test)
    truth = COCO()
    truth.dataset = test.to_coco()
    truth.createIndex()
    direct = COCOeval(truth, truth.loadRes(coco_results(detections)), "bbox")
    direct.evaluate()
    direct.accumulate()
    direct.summarize()
    assert 0.2 < ours["map50"] < 1.0
    assert ours["map50"] == pytest.approx(direct.stats[1], abs=1e-6)
    assert ours["map"] == pytest.approx(direct.stats[0], abs=1e-6)


def test_detection_task_scores_raw_outputs_and_nothing_found_scores_zero(shapes):
    test = shapes.test
    head = DetectionHead("yolov8", 2, image_size=(64, 64))
    task = get_task("detection").bind(head.to_dict())
    raw = np.zeros((len(test), 6, 4), np.float32)  # four anchors, all scores 0: nothing found
    assert task.score([raw], test) == {"map50": 0.0, "map": 0.0}
    for i, (boxes, labels) in enumerate(zip(test.boxes, test.box_labels)):  # the truth itself, as yolov8 outputs
        for k, (box, label) in enumerate(zip(boxes[:4], labels[:4])):
            raw[i, :4, k] = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]
            raw[i, 4 + label, k] = 0.9
    assert task.score([raw], test)["map50"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="head"):
        get_task("detection").score([raw], test)


def _coco_with(tmp_path, annotation: dict) -> str:
    folder = write_shapes_coco(tmp_path / "bad", count=10)
    data = json.loads((folder / "instances_train.json").read_text())
    data["annotations"].append({"id": 777, "image_id": data["images"][0]["id"], "iscrowd": 0, "area": 1, **annotation})
    (folder / "instances_train.json").write_text(json.dumps(data))
    return str(folder)


@pytest.mark.parametrize("annotation, phrase", [
    ({"category_id": 1, "bbox": [50, 50, 30, 30]}, "outside the 64x64 image"),
    ({"category_id": 1, "bbox": [10, 10, -5, 8]}, "zero or negative size"),
    ({"category_id": 9, "bbox": [10, 10, 5, 5]}, "category 9"),
])
def test_a_bad_box_is_refused_naming_the_file_and_annotation(tmp_path, annotation, phrase):
    with pytest.raises(ConfigError) as error:
        load_detection(_coco_with(tmp_path, annotation), size=64)
    message = str(error.value)
    assert phrase in message and "annotation 777" in message and "instances_train.json" in message
    assert "shape0001.png" in message or "image shape0001.png" in message or "shape0" in message


def test_images_without_boxes_load_and_train(shapes):
    empty = [i for i, boxes in enumerate(shapes.train.boxes) if len(boxes) == 0]
    assert empty, "the shapes set leaves every tenth image empty"
    from edgeopt.models.sources import load_model

    model = load_model("edgeopt.models.detectors:ssdlite?num_classes=2&in_channels=1&size=64")
    batches = task_of(model).training_data(shapes.train.subset(empty[:2] + [1]), model.input_spec)
    inputs, targets = batches.batch(torch.arange(3), None, False)
    assert [len(t["boxes"]) for t in targets][:2] == [0, 0]
    loss = task_of(model).training_loss()(model.module.train(), inputs, targets)
    assert torch.isfinite(loss) and loss.item() > 0


def test_the_tiny_ssd_trains_names_its_head_layers_and_refuses_sizes_it_cannot_take(shapes):
    from edgeopt.core.errors import ModelSourceError
    from edgeopt.models.sources import load_model

    model = load_model("edgeopt.models.detectors:ssd_tiny?num_classes=2&in_channels=1&size=64")
    deltas, logits = model.module.eval()(torch.zeros(1, 1, 64, 64))
    head = model.module.detection_head()
    assert deltas.shape[1] == logits.shape[1] == len(head.anchors) and logits.shape[2] == 3
    layers = dict(model.module.named_modules())
    assert all(isinstance(layers[name], torch.nn.Conv2d) for name in model.module.head_layers())
    batches = task_of(model).training_data(shapes.train.subset([1, 2]), model.input_spec)
    inputs, targets = batches.batch(torch.arange(2), None, False)
    assert torch.isfinite(task_of(model).training_loss()(model.module.train(), inputs, targets))
    with pytest.raises(ModelSourceError, match="at least 32"):
        load_model("edgeopt.models.detectors:ssd_tiny?size=24")


def test_augmentation_moves_boxes_with_the_pixels(shapes):
    from edgeopt.models.sources import load_model

    model = load_model("edgeopt.models.detectors:ssdlite?num_classes=2&in_channels=1&size=64")
    dataset = shapes.train.subset([i for i, b in enumerate(shapes.train.boxes) if len(b)][:8])
    batches = task_of(model).training_data(dataset, model.input_spec)
    inputs, targets = batches.batch(torch.arange(8), torch.Generator().manual_seed(3), True)
    for image, target in zip(inputs, targets):
        for box, label in zip(target["boxes"], target["labels"]):
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
            inside = image[0, y0 + 2:y1 - 2, x0 + 2:x1 - 2]
            if label == 0 and inside.numel():  # a filled square: bright wherever its box says
                assert inside.mean() > image.mean(), (box, label)


def test_int8_keeps_the_detector_head_in_float_unless_asked(tmp_path, shapes, monkeypatch):
    import shutil

    import onnx

    import edgeopt.backends.onnxruntime as ort
    from edgeopt.compile import export
    from edgeopt.images import to_input
    from edgeopt.models.sources import load_model
    from edgeopt.core.quantization import QuantizationConfig

    # SSDlite's head on a small backbone (tests/plugins/tiny_ssd.py): the MobileNetV3 one took the ONNX
    # export tens of seconds per compile, and what INT8 does to the head is the same. Both compiles
    # quantize the same FP32 graph of the same model: torch.onnx exports it once, the second gets a copy.
    fp32, write_onnx = tmp_path / "fp32-once.onnx", ort.write_onnx

    def write_onnx_once(model, path):
        if not fp32.exists():
            write_onnx(model, fp32)
        shutil.copyfile(fp32, path)

    monkeypatch.setattr(ort, "write_onnx", write_onnx_once)
    model = load_model("tests.plugins.tiny_ssd:build?num_classes=2&in_channels=1&size=64", input="1x1x64x64")
    assert model.task == "detection" and len(model.module.head_layers()) == 4
    calibration = to_input(shapes.train.images[:32], model.input_spec)
    kept = export(model, "onnxruntime", tmp_path / "kept", "int8", calibration=calibration, verify=False)
    both = export(model, "onnxruntime", tmp_path / "both", "int8", calibration=calibration, verify=False,
                  quantization=QuantizationConfig(quantize_head=True))

    def float_head_convs(artifact) -> int:
        """Head convolutions whose weight is a float initializer, not the output of a DequantizeLinear."""
        graph = onnx.load(str(artifact.entry)).graph
        initializers = {i.name for i in graph.initializer}
        return sum(1 for n in graph.node if n.op_type == "Conv" and n.input[1].startswith("head.")
                   and n.input[1] in initializers)

    assert float_head_convs(kept) == len(model.module.head_layers())
    assert float_head_convs(both) == 0
    assert kept.manifest["head"]["convention"] == "ssd"
    assert any("stay in FP32" in note for note in kept.manifest["notes"])


class _TinyYolo(torch.nn.Module):
    """A YOLOv8-layout head on one convolution: (N, 4 + 2 classes, 64 anchors), boxes in input pixels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 8, stride=8)

    def forward(self, x):
        out = self.conv(x).flatten(2)
        return torch.cat([torch.sigmoid(out[:, :4]) * 64, torch.sigmoid(out[:, 4:] * 4)], dim=1)


def test_a_users_onnx_detector_with_a_declared_layout_exports_and_predicts(tmp_path):
    from PIL import Image

    from tests.helpers import edgeopt

    onnx_file = tmp_path / "tiny_yolo.onnx"
    torch.onnx.export(_TinyYolo().eval(), (torch.zeros(1, 3, 64, 64),), str(onnx_file), dynamo=True, opset_version=18)
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(image)
    proc = edgeopt("export", str(onnx_file), "-b", "onnxruntime", "--outputs", "yolov8", "--labels", "car,bus",
                   "-o", str(tmp_path / "art"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["task"] == "detection" and manifest["head"]["num_classes"] == 2
    assert manifest["input"]["preprocess"]["fit"] == "letterbox"
    proc = edgeopt("predict", str(tmp_path / "art"), str(image), "--score-threshold", "0.05")
    record = json.loads(proc.stdout)
    assert proc.returncode == 0 and record["width"] == 80 and set(record["labels"]) <= {"car", "bus"}
    assert record["boxes"] and all(0 <= b[0] <= b[2] <= 80 and 0 <= b[1] <= b[3] <= 48 for b in record["boxes"])
    proc = edgeopt("export", str(onnx_file), "-b", "onnxruntime", "--outputs", "yolov8", "--labels", "a,b,c",
                   "-o", str(tmp_path / "art3"))
    assert proc.returncode != 0 and "3 labels" in proc.stderr


def test_a_detector_distils_to_a_lower_resolution_with_anchors_of_its_own_size():
    from edgeopt.models.detectors import ssdlite
    from edgeopt.passes.kd import distillation_loss

    teacher = ssdlite(num_classes=2, in_channels=1, size=128).eval()
    student = teacher.at_size((96, 96)).train()
    assert len(student.anchors) < len(teacher.anchors)
    task = get_task("detection").bind(student.detection_head().to_dict())
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    loss = distillation_loss(teacher, (1, 1, 128, 128), task=task)(student, torch.randn(2, 1, 96, 96), targets)
    assert torch.isfinite(loss) and loss.item() > 0


def test_a_torchvision_ssdlite_takes_the_input_size_it_is_given():
    from edgeopt.models.sources import load_model

    native = load_model("torchvision:ssdlite320_mobilenet_v3_large?num_classes=6")
    small = load_model("torchvision:ssdlite320_mobilenet_v3_large?num_classes=6&in_channels=1", input="1x1x128x128")
    assert native.input_spec.shape == (1, 3, 320, 320) and native.task == "detection"
    assert small.head["image_size"] == [128, 128] and len(small.head["anchors"]) < len(native.head["anchors"])
    deltas, logits = small.reference()(small.input_spec.example(batch=2))
    assert deltas.shape == (2, len(small.head["anchors"]), 4) and logits.shape[-1] == 7
