"""Fixtures every test module may use (pytest finds them here; nothing is imported from a test module)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import pytest

# Bytecode. Where PYTHONDONTWRITEBYTECODE is set (so no __pycache__ beside the sources), every process the
# suite starts (xdist workers, `edgeopt` runs, servers, measurement workers) compiled torch's sources again:
# 5-10 s of CPU each, most of the suite's time on a small machine. The compiled files go to one folder in the
# temp dir instead (PYTHONPYCACHEPREFIX, inherited by every child), still none beside the sources.
if sys.dont_write_bytecode:
    PYCACHE = os.path.join(tempfile.gettempdir(), "edgeopt-tests-pycache")
    sys.dont_write_bytecode, sys.pycache_prefix = False, PYCACHE
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = PYCACHE

# OpenMP threads that wait sleep instead of spinning, in every process the suite starts (read when torch's OpenMP
# loads, so set before anything imports it): the xdist workers and the commands they run share the cores, and a
# spinning pool holds a core another process needs. Measured on 2 cores: two 2-thread trainings side by side took
# 161-169 s spinning (GNU OpenMP's default) and 72 s sleeping.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgeopt.compile import export
from edgeopt.models.sources import LoadedModel, load_model
from tests.helpers import TINY_INPUT, TINY_SOURCE, TRAIN, edgeopt


# What every xdist worker (and its CLI zygote) imports: compiled once, before they start, when the cache is new
# (by two processes at once: torch's part, and the rest).
WARM_UP = (("torch", "torchvision", "torch._dynamo", "torch.export", "torch.onnx._internal.exporter._compat"),
           ("numpy", "onnxscript", "sklearn.datasets", "onnxruntime.quantization", "openvino", "fastapi", "uvicorn",
            "hypothesis"))


def pytest_configure(config) -> None:
    """Under pytest-xdist the workers share the CPUs: torch in each runs on its share of them (one thread each
    on a two-core machine), not on all of them, where its threads only wait on one another's cores. Before the
    workers start, a bytecode cache still empty is filled by one process, not compiled again by each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if os.environ.get("PYTEST_XDIST_WORKER") and workers > 1:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))
    elif not os.environ.get("PYTEST_XDIST_WORKER") and config.getoption("numprocesses", None) and sys.pycache_prefix:
        import importlib.util
        import subprocess

        torch_spec = importlib.util.find_spec("torch")
        if torch_spec is not None and not os.path.exists(importlib.util.cache_from_source(torch_spec.origin)):
            code = "import importlib, sys\nfor name in sys.argv[1:]:\n    try: importlib.import_module(name)\n" \
                   "    except Exception: pass"
            warming = [subprocess.Popen([sys.executable, "-c", code, *names], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL) for names in WARM_UP]
            for process in warming:
                process.wait()


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
    """Export the tiny model once per backend per run (compiles cost seconds; under pytest-xdist the first
    worker to ask exports it, the others open that artifact). A program file (TorchScript) loads unasked only in
    the process that compiled it: the other workers vouch for it here, as the test run made it."""
    from edgeopt.core import trust
    from edgeopt.core.artifact import Artifact, sha256_of

    cache: dict[str, object] = {}

    def get(backend: str):
        if backend not in cache:
            root = built_once(tmp_path_factory, f"artifact-{backend}",
                              lambda folder: export(tiny_model, backend, folder / backend))
            artifact = Artifact.open(root / backend, verify=False)  # what export returns
            trust.made_program(sha256_of(artifact.entry))
            cache[backend] = artifact
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
def staged_digits(tmp_path_factory):
    """A digits classifier and its early-exit model, made by `edgeopt.early_exits` (about 20 s):
    (checkpoint, StagedExits) — its settings timed, so a server or a stream can climb them."""
    import edgeopt
    from edgeopt.core.exits import StagedExits
    from edgeopt.passes.early_exit import EarlyExitConfig

    def make(root: Path) -> None:
        model = root / "digits.safetensors"
        edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn?in_channels=1&width=32", model, epochs=4, lr=0.01,
                      augment=False, progress=False)
        edgeopt.early_exits(str(model), "digits", root / "exits",
                            EarlyExitConfig(fine_tune=edgeopt.FineTune(epochs=2, lr=0.01)), progress=False)

    root = built_once(tmp_path_factory, "staged-digits", make)
    return root / "digits.safetensors", StagedExits.open(root / "exits")


@pytest.fixture(scope="session")
def trained_digits():
    """A digits classifier trained in this process: (model, splits, 200 calibration inputs, its test top-1)."""
    from edgeopt.tasks.classification.data import input_spec_for, load_dataset
    from edgeopt.images import to_input
    from edgeopt.passes.train import TrainConfig, Validator, fit
    from edgeopt.tasks import get_task
    from tests.helpers import evaluate

    task = get_task("classification")
    splits = load_dataset("digits")
    spec = input_spec_for(splits.train)
    model = load_model("edgeopt.models.zoo:tiny_cnn?in_channels=1&num_classes=10", input=spec)
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
        proc = edgeopt("train", str(data), "--task", "detection", "--arch", "edgeopt.models.detectors:ssdlite", "--out",
                       str(root / "shapes.safetensors"), "--epochs", "15", "--batch-size", "16", "--lr", "0.004",
                       "--threads", "2")
        assert proc.returncode == 0, proc.stderr
        assert "mAP@0.5" in proc.stdout

    root = built_once(tmp_path_factory, "detector", make)
    return root / "shapes.safetensors", root / "shapes"


@pytest.fixture(scope="session")
def served(tmp_path_factory, artifact_cache):
    """ONNX Runtime artifacts to serve: a classifier ("tiny", 3x32x32) and an untrained small SSD detector
    ("det", 3 classes at 64 px) — serving checks plumbing, not accuracy."""
    def make(root: Path) -> None:  # once per run (the export takes seconds), shared by the xdist workers
        detector = load_model("edgeopt.models.detectors:ssd_tiny?num_classes=3&size=64&in_channels=3", input="1x3x64x64")
        export(detector, "onnxruntime", root / "det")

    return {"tiny": artifact_cache("onnxruntime").path, "det": built_once(tmp_path_factory, "served", make) / "det"}


@pytest.fixture(scope="session")
def served_ladder(tmp_path_factory):
    """A ladder of two untrained ONNX Runtime CNNs on 3x64x64 that differ only in width (48 and 8 channels):
    rung r0 is several times slower per row than r1, so load moves the controller between them."""
    from edgeopt.measure.latency import TimingConfig
    from edgeopt.pipeline.ladder import LadderConfig, assemble

    def make(root: Path) -> None:
        for width in (48, 8):
            model = load_model(f"{TINY_SOURCE}?width={width}", input="1x3x64x64")
            export(model, "onnxruntime", root / f"w{width}")
        quick = TimingConfig(warmup=2, min_iters=10, min_seconds=0.2)  # the widths differ ~30x in MACs: no need for more
        assemble(root / "ladder", [root / "w48", root / "w8"],
                 config=LadderConfig(min_speedup=1.5, threads=1, timing=quick))

    return built_once(tmp_path_factory, "ladder", make) / "ladder"


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
