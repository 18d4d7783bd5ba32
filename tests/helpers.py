"""Helpers the tests share (fixtures live in conftest.py): the CLI as a user runs it, and evaluation."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgeopt.backends import all_backends
from edgeopt.compile import unsupported_reason
from edgeopt.measure.inference import outputs_on
from edgeopt.models.sources import load_model
from edgeopt.tasks import get_task

TINY_SOURCE = "edgeopt.models.zoo:tiny_cnn"
TINY_INPUT = "1x3x32x32"
# `edgeopt train` on scikit-learn's digits: a real classifier in seconds.
TRAIN = ["train", "digits", "--arch", "edgeopt.models.zoo:tiny_cnn", "--epochs", "4", "--no-augment",
         "--optimizer", "adamw", "--lr", "0.01", "--threads", "1"]
# The workplace's datasets beside the repository, or EDGEOPT_DATASETS.
DATASETS = Path(os.environ.get("EDGEOPT_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def edgeopt(*args: str, cwd=None, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m edgeopt ARGS`` in a process of its own, as a user would (``env``: variables to add).

    The process is forked from a zygote that has torch and the other heavy third-party libraries imported
    already (tests/cli_zygote.py: a run costs its work, not 4-13 s of imports); with
    EDGEOPT_TESTS_FRESH_INTERPRETER=1 every run gets a new interpreter instead."""
    full_env = {**os.environ, **(env or {})}
    if os.environ.get("EDGEOPT_TESTS_FRESH_INTERPRETER") == "1":
        return subprocess.run([sys.executable, "-m", "edgeopt", *args], capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, env=full_env)
    return _Zygote.for_env(full_env).run(list(args), str(cwd or os.getcwd()), full_env, timeout)


# Read when an interpreter, torch, OpenMP or a BLAS starts: a zygote started with other values is replaced.
_STARTUP_VARIABLES = ("PYTHON", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "TORCH", "LD_", "CUDA",
                      "MALLOC_")


# Set by importing scikit-learn, for Intel's OpenMP runtime (torch here uses GNU's): no reason for a new zygote.
_SET_BY_IMPORTS = {"KMP_INIT_AT_FORK", "KMP_DUPLICATE_LIB_OK"}


def _startup_of(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_VARIABLES) and k not in _SET_BY_IMPORTS}


class _Zygote:
    """tests/cli_zygote.py, one per test process, started on the first CLI run (again if a variable read at
    start-up has changed since) and stopped at exit."""

    _lock = threading.Lock()
    _current: "_Zygote | None" = None

    @classmethod
    def for_env(cls, env: dict) -> "_Zygote":
        with cls._lock:
            current = cls._current
            if current is None or current.proc.poll() is not None or current.startup != _startup_of(env):
                if current is not None:
                    current.retire()
                cls._current = current = cls(env)
            return current

    def __init__(self, env: dict) -> None:
        import atexit
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="edgeopt-zygote-"))
        self.socket = str(self.folder / "socket")
        self.startup = _startup_of(env)
        with open(self.folder / "zygote.err", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_zygote.py")), self.socket],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        if self.proc.stdout.readline().strip() != b"ready":
            self.proc.kill()
            raise RuntimeError(f"the CLI zygote did not start: {(self.folder / 'zygote.err').read_text()}")
        self.runs = itertools.count()
        atexit.register(self.close)

    def run(self, args: list[str], cwd: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
        import json
        import signal
        import socket
        import time

        number = next(self.runs)
        out, err = self.folder / f"{number}.out", self.folder / f"{number}.err"
        request = {"args": args, "cwd": cwd, "env": env, "stdout": str(out), "stderr": str(err)}
        command = [sys.executable, "-m", "edgeopt", *args]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.socket)
            conn.sendall(json.dumps(request).encode() + b"\n")
            received = b""
            deadline = time.monotonic() + timeout
            pid = None
            while received.count(b"\n") < 2:
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = conn.recv(64)
                except TimeoutError:
                    if pid is None:
                        raise
                    os.kill(pid, signal.SIGKILL)
                    output, errors = (p.read_text() if p.exists() else "" for p in (out, err))
                    raise subprocess.TimeoutExpired(command, timeout, output=output, stderr=errors) from None
                if not chunk:
                    raise RuntimeError(f"the CLI zygote stopped answering: {(self.folder / 'zygote.err').read_text()}")
                received += chunk
                if pid is None and b"\n" in received:
                    pid = int(received.split(b"\n")[0])
        code = int(received.split(b"\n")[1])
        proc = subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return proc

    def retire(self) -> None:
        """No new runs; it exits once the runs under way are done (close() at exit collects it)."""
        if self.proc.poll() is None:
            self.proc.stdin.close()

    def close(self) -> None:
        import shutil

        self.retire()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def assert_one_line_error(proc: subprocess.CompletedProcess, *phrases: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]


def evaluate(run, dataset, spec, reference=None) -> dict:
    """Classification metrics of ``run`` on ``dataset``; with a reference model, its top-1 agreement too."""
    task = get_task("classification")
    outputs = outputs_on(run, dataset, spec)
    report = task.score(outputs, dataset)
    if reference is not None:
        report.update(task.fidelity(outputs_on(reference.reference(), dataset, reference.input_spec), outputs))
    return report


# Backends whose every export takes 10-20 s of CPU (ExecuTorch lowers through XNNPACK): their conformance
# cases run in the full tier (`make test`, CI), which keeps `make test-fast` within its few minutes.
SLOW_TO_EXPORT = frozenset({"executorch"})


def backend_param(name: str, unavailable: str | None) -> object:
    """A pytest param for one backend: skipped with its reason when unavailable, slow when its export is."""
    marks = [pytest.mark.skip(reason=f"{name} unavailable here: {unavailable}")] if unavailable else []
    if name in SLOW_TO_EXPORT:
        marks.append(pytest.mark.slow)
    return pytest.param(name, marks=marks, id=name)


def backend_params() -> list:
    """One pytest param per registered backend, skipped with its own unavailability reason."""
    probe = load_model(TINY_SOURCE, input=TINY_INPUT)
    return [backend_param(backend.name, unsupported_reason(backend, probe, "fp32")) for backend in all_backends()]


def write_shapes_coco(folder: Path, count: int = 160, size: int = 64, seed: int = 0, height: int | None = None) -> Path:
    """A COCO dataset of grey images (``size`` wide, ``height`` high: square by default) with bright
    filled squares (class "square") and hollow wide rectangles (class "frame"), 1-2 per image, every
    tenth image empty: a detector learns it in a few epochs. Returns the folder (instances_train.json,
    instances_test.json, images/)."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size, height or size
    (folder / "images").mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "test": []}
    for index in range(count):
        image = np.full((height, width), 40, np.uint8) + rng.integers(0, 20, (height, width), dtype=np.uint8)
        boxes = []
        for _ in range(0 if index % 10 == 3 else int(rng.integers(1, 3))):
            label = int(rng.integers(0, 2))
            w = int(rng.integers(min(width, height) // 5, min(width, height) // 2))
            h = w if label == 0 else max(4, w // 2)
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            if label == 0:
                image[y:y + h, x:x + w] = 220
            else:
                image[y:y + h, x:x + w][[0, 1, -2, -1], :] = 200
                image[y:y + h, x:x + w][:, [0, 1, -2, -1]] = 200
            boxes.append((label, [x, y, w, h]))
        name = f"shape{index:04d}.png"
        Image.fromarray(image).save(folder / "images" / name)
        splits["train" if index % 5 else "test"].append((index, name, boxes))
    for split, items in splits.items():
        images = [{"id": i, "file_name": name, "width": width, "height": height} for i, name, _ in items]
        annotations = [{"id": 1000 * i + k, "image_id": i, "category_id": label + 1, "bbox": box, "area": box[2] * box[3],
                        "iscrowd": 0} for i, _, boxes in items for k, (label, box) in enumerate(boxes)]
        categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "frame"}]
        (folder / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningServer:
    """``edgeopt serve ARGS`` (or another ``command``, ready when ``ready_path`` answers 200) in its own
    process on a loopback port (free, unless given); ``prefix`` runs before it (e.g. taskset); stopped with SIGTERM."""

    def __init__(self, *args: str, python: str = sys.executable, env: dict | None = None, ready_within: float = 60,
                 command: str = "serve", ready_path: str = "/v2/health/ready", prefix: tuple[str, ...] = (),
                 port: int | None = None) -> None:
        import time

        import httpx

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([*prefix, python, "-m", "edgeopt", command, *args, "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        deadline = self.started + ready_within
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=1).status_code == 200:
                    self.ready_seconds = time.perf_counter() - self.started
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"the server was not ready within {ready_within} s")

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM, wait, and return what the server wrote to stderr."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


AGENT_TOKEN = "test-agent-token-0123"


def running_agent(store: Path, *args: str, python: str = sys.executable, prefix: tuple[str, ...] = (),
                  port: int | None = None) -> RunningServer:
    """``edgeopt agent`` with the tests' token, its store in ``store``, on a loopback port."""
    return RunningServer("--store", str(store), *args, python=python, command="agent", ready_path="/v1/health",
                         prefix=prefix, port=port, env={"EDGEOPT_AGENT_TOKEN": AGENT_TOKEN})


class CreatesAFile:
    """Unpickling this opens (creates) ``path``: the harmless stand-in for arbitrary code in a hostile pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def tar_of(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """An uncompressed tar with exactly these members (any names, hostile ones too) and symlinks."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()
