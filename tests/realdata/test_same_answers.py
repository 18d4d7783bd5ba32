"""The same image gets the same answer through `edgeopt eval --predictions`, `edgeopt predict`, the server's
`/predict` and `edgeopt stream` (a folder of images): every NEU-CLS test image (top-1) and every NEU-DET test
image (boxes to 1e-3 px), on ONNX Runtime INT8 and OpenVINO INT8. One exception, a property of the runtime:
OpenVINO's INT8 kernels on CPUs without VNNI answer an image slightly differently in a batch (eval) than alone
(predict, stream, the server at low load), so there eval is compared within half a pixel on 98% of the images.

The models are small (a tiny CNN trained one epoch on NEU-CLS; the suite's SSDlite, trained on synthetic
shapes at 64 px, so NEU-DET's 128 px images are letterboxed in and its boxes mapped back out): answers need
not be right to be compared, and at a 0.1 threshold there are thousands of boxes to disagree on. benchmarks/same_answers.py runs the same comparison on the trained models through the library.
Skipped, with the reason, when ../shared/datasets is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import RunningServer, edgeopt

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (DATASETS / "neu_cls_64.npz").is_file() or not (DATASETS / "neu_det").is_dir(),
    reason=f"real datasets not found at {DATASETS} (neu_cls_64.npz, neu_det)")]
THRESHOLD = "0.1"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("same-answers")


def _checkpoints(work: Path, detector: Path) -> dict[str, tuple[Path, str]]:
    cls = work / "neu-cls.safetensors"
    trained = edgeopt("train", str(DATASETS / "neu_cls_64.npz"), "--arch", "edgeopt.models.zoo:tiny_cnn", "--out", str(cls),
                      "--epochs", "1", "--no-augment")
    assert trained.returncode == 0, trained.stderr[-2000:]
    return {"NEU-CLS": (cls, str(DATASETS / "neu_cls_64.npz")), "NEU-DET": (detector, str(DATASETS / "neu_det"))}


def _test_images(kind: str, data: str, folder: Path) -> list[Path]:
    from PIL import Image

    from edgeopt import get_task

    task = get_task("detection" if kind == "NEU-DET" else "classification")
    images = task.training_splits(data).test.images
    folder.mkdir()
    paths = [folder / f"{i:04d}.png" for i in range(len(images))]
    for path, pixels in zip(paths, images):
        Image.fromarray(pixels[..., 0]).save(path)  # NEU is grayscale; PNG keeps every pixel
    return paths


def _batch_invariant(backend: str) -> bool:
    """Whether the runtime's INT8 answer for an image is the same in a batch as alone. OpenVINO's INT8 kernels on a
    CPU without VNNI are not: measured on a 2-core EPYC (AVX2), its NEU-DET detector at batch 32 against batch 1
    moved boxes in 163 of 360 images (p99 0.11 px) and changed the box count of 2 (ONNX Runtime: none)."""
    from edgeopt.measure.environment import collect

    flags = set(collect()["isa_flags"])
    return backend != "openvino" or bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _differences(kind: str, reference: list[dict], other: list[dict], moved_px: float = 1e-3) -> list[str]:
    problems = [] if len(reference) == len(other) else [f"{len(other)} answers for {len(reference)} images"]
    for index, (a, b) in enumerate(zip(reference, other)):
        if kind == "NEU-CLS" and a["label"] != b["label"]:
            problems.append(f"image {index}: {a['label']} != {b['label']}")
        elif kind == "NEU-DET" and (a["labels"] != b["labels"] or
                                     np.abs(np.asarray(a["boxes"]) - np.asarray(b["boxes"])).max(initial=0) > moved_px):
            problems.append(f"image {index}: {len(a['labels'])} boxes != {len(b['labels'])}, or moved")
    return problems


def _batched_differences(kind: str, backend: str, by_eval: list[dict], single: list[dict]) -> list[str]:
    """eval (batches) against a one-image answer: exact where the runtime is batch-invariant; else at most 2% of the
    images may differ (a box moved more than half a pixel, a box near the threshold, a class near a tie)."""
    if _batch_invariant(backend):
        return _differences(kind, by_eval, single)
    problems = _differences(kind, by_eval, single, moved_px=0.5)
    allowed = int(0.02 * len(by_eval))
    return problems if len(problems) > allowed or len(by_eval) != len(single) else []


def test_eval_predict_the_server_and_the_stream_answer_alike_on_every_test_image(work, trained_detector):
    artifacts, files = {}, {}
    for kind, (checkpoint, data) in _checkpoints(work, trained_detector[0]).items():
        files[kind] = _test_images(kind, data, work / f"{kind}-images")
        for backend in ("onnxruntime", "openvino"):
            out = work / f"{kind}-{backend}"
            made = edgeopt("quantize", str(checkpoint), "--data", data, "--backend", backend, "--out", str(out),
                           "--calibration-samples", "32")
            assert made.returncode == 0, made.stderr[-2000:]
            artifacts[(kind, backend)] = (out, data)
    served = [f"{kind.lower()}-{backend}={out}" for (kind, backend), (out, _) in artifacts.items()]
    problems = []
    with RunningServer(*served, "--score-threshold", THRESHOLD, ready_within=300) as server:
        for (kind, backend), (out, data) in artifacts.items():
            evaluated = edgeopt("eval", str(out), "--data", data, "--predictions", str(work / "eval.jsonl"),
                                "--score-threshold", THRESHOLD)
            assert evaluated.returncode == 0, evaluated.stderr[-2000:]
            by_eval = [json.loads(line) for line in (work / "eval.jsonl").read_text().splitlines()]
            predicted = edgeopt("predict", str(out), *map(str, files[kind]), "--score-threshold", THRESHOLD)
            streamed = edgeopt("stream", str(files[kind][0].parent), str(out), "--score-threshold", THRESHOLD,
                               "--no-track")
            assert predicted.returncode == 0 and streamed.returncode == 0, predicted.stderr + streamed.stderr
            by_server = [httpx.post(f"{server.url}/v2/models/{kind.lower()}-{backend}/predict", timeout=60,
                                    content=path.read_bytes(), headers={"content-type": "image/png"}).json()
                         for path in files[kind]]
            assert len(by_eval) == 360
            if kind == "NEU-DET":
                assert sum(len(r["boxes"]) for r in by_eval) > 300, "too few boxes to compare"
            by_predict = [json.loads(line) for line in predicted.stdout.splitlines()]
            problems += [f"{kind} {backend} predict: {p}" for p in _batched_differences(kind, backend, by_eval,
                                                                                         by_predict)[:3]]
            # every other way runs one image at a time, as predict does: the same answer exactly, on every runtime
            for way, answers in (("stream", streamed.stdout), ("/predict", by_server)):
                answers = [json.loads(line) for line in answers.splitlines()] if isinstance(answers, str) else answers
                problems += [f"{kind} {backend} {way}: {p}" for p in _differences(kind, by_predict, answers)[:3]]
    assert not problems, "\n".join(problems)
