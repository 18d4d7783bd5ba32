"""Fixtures every test module may use (pytest finds them here; nothing is imported from a test module)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from edgeopt.compile import export
from edgeopt.models import LoadedModel, load_model
from tests.helpers import TINY_INPUT, TINY_SOURCE, TRAIN, edgeopt


def built_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder ``make`` fills, built once per run: under pytest-xdist the first worker to ask builds it
    (under a lock) and the others reuse it, so a two-minute training is not repeated per worker."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, above every worker's own
    folder = shared / name
    with FileLock(str(shared / f"{name}.lock")):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return load_model(TINY_SOURCE, input=TINY_INPUT)


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory, tiny_model):
    """Export the tiny model once per backend per test session (compiles cost seconds)."""
    root = tmp_path_factory.mktemp("artifacts")
    cache: dict[str, object] = {}

    def get(backend: str):
        if backend not in cache:
            cache[backend] = export(tiny_model, backend, root / backend)
        return cache[backend]

    return get


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A digits classifier trained by `edgeopt train` in a real process: (checkpoint, that process)."""
    out = tmp_path_factory.mktemp("train") / "digits.safetensors"
    proc = edgeopt(*TRAIN, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="session")
def trained_digits():
    """A digits classifier trained in this process: (model, splits, 200 calibration inputs, its test top-1)."""
    from edgeopt.data import input_spec_for, load_dataset
    from edgeopt.images import to_input
    from edgeopt.passes.train import TrainConfig, Validator, fit
    from edgeopt.tasks import get_task
    from tests.helpers import evaluate

    task = get_task("classification")
    splits = load_dataset("digits")
    spec = input_spec_for(splits.train)
    model = load_model("edgeopt.zoo:tiny_cnn?in_channels=1&num_classes=10", input=spec)
    model.task = task.name
    train, val = splits.train.split(0.1, seed=0)
    fit(model.module, train, val, spec, TrainConfig(epochs=6, optimizer="adamw", lr=0.01, augment=False),
        task.training_loss(), Validator(task, val, spec), show_progress=False)
    calibration = to_input(splits.train.calibration(200).images, spec)
    fp32 = evaluate(model.reference(), splits.test, spec)["top1"]
    assert fp32 > 0.9
    return model, splits, calibration, fp32


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory):
    """A detector trained by `edgeopt train --task detection` on a synthetic COCO set of squares and
    frames (64 px): (checkpoint, dataset folder). About two minutes."""
    from tests.helpers import write_shapes_coco

    def make(root: Path) -> None:
        data = write_shapes_coco(root / "shapes", count=400)
        proc = edgeopt("train", str(data), "--task", "detection", "--arch", "edgeopt.detectors:ssdlite", "--out",
                       str(root / "shapes.safetensors"), "--epochs", "15", "--batch-size", "16", "--lr", "0.004",
                       "--threads", "2")
        assert proc.returncode == 0, proc.stderr
        assert "mAP@0.5" in proc.stdout

    root = built_once(tmp_path_factory, "detector", make)
    return root / "shapes.safetensors", root / "shapes"


@pytest.fixture(scope="session")
def served(tmp_path_factory, artifact_cache):
    """ONNX Runtime artifacts to serve: a classifier ("tiny", 3x32x32) and an untrained SSDlite detector
    ("det", 3 classes at 64 px) — serving checks plumbing, not accuracy."""
    root = tmp_path_factory.mktemp("served")
    detector = load_model("edgeopt.detectors:ssdlite?num_classes=3&size=64&in_channels=3", input="1x3x64x64")
    return {"tiny": artifact_cache("onnxruntime").path, "det": export(detector, "onnxruntime", root / "det").path}


@pytest.fixture(scope="session")
def lean_python(tmp_path_factory) -> str:
    """A venv holding edgeopt[edge-onnxruntime] installed from this checkout — an edge box, no torch
    (about a minute, once per session)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    venv = tmp_path_factory.mktemp("lean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", f"{root}[edge-onnxruntime]"],
                             capture_output=True, text=True, timeout=900)
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"the package index is unreachable: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr
    return python
