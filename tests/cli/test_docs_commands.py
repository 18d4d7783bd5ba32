"""The quick-start commands of the README, docs/classification.md and docs/adapting.md run, as written, one after the other in
a folder per page (each may use what an earlier one of its page wrote), with only their training epochs cut to one and their
timings shortened: a page whose commands no longer run fails here.

Not run: commands that need what this machine may not have or that run until stopped (each with its reason
in ``NOT_RUN``); the detection pages' commands need NEU-DET and a trained detector, and
tests/realdata/test_same_answers.py runs that path (train, export INT8, eval, predict, stream, serve)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import edgeopt
from tests.unit.test_docs import SHELL_LANGUAGES, Page

ROOT = Path(__file__).resolve().parents[2]
PAGES = (ROOT / "README.md", ROOT / "docs" / "classification.md", ROOT / "docs" / "adapting.md")
pytestmark = pytest.mark.slow  # two to three minutes of training and compiling on two cores

# what a command mentions -> why it is not run here
NOT_RUN = {
    "edgeopt optimize": "the search has its own tests (tests/cli/test_optimize*.py, a budget of minutes)",
    "torchvision:mobilenet_v2 --json": "benchmarks every backend on a full-size network: benchmarks/backends.py",
    "my.pkg:build_net": "a user's own factory",
    "runs/neu.safetensors": "a model trained on NEU-CLS (benchmarks/compression.py trains it)",
    "make demo": "the demo is CI's first command",
    "digits-rpi/best.toml": "written by the search above",
    "neu_det": "NEU-DET and a trained detector: tests/realdata/test_same_answers.py runs that path",
    "neu-det": "the NEU-DET detector above",
    "yolov8n.onnx": "a user's Ultralytics export (tests/unit/test_detection.py declares one it builds)",
    "edgeopt serve out/digits-ladder": "runs until stopped: tests/serve/test_ladder.py serves a ladder",
    "rtsp://camera": "a user's camera: tests/stream/test_stream.py streams a ladder",
    "edgeopt serve out/digits-exits": "runs until stopped: tests/serve/test_ladder.py serves an early-exit model",
    "video.mp4": "a user's video: tests/stream/test_stream.py streams an early-exit model",
}
# options that make a run long, and the short value they get here
SHORTER = {"--epochs": "1", "--steps": "2", "--seconds": "0.2", "--sustained": "0", "--iters": "5", "--warmup": "2"}
EPOCHS_BY_DEFAULT = ("prune", "distill")  # they fine-tune for 15 epochs unless told
# commands that time by default for seconds per backend and batch (a bench of every backend: minutes on two cores)
TIMED_BY_DEFAULT = ("bench",)


def docs_commands() -> list[tuple[str, str]]:
    """(where, command) for every ``edgeopt`` line of the pages' shell blocks, continuations joined and
    comments dropped."""
    found = []
    for path in PAGES:
        for language, first, lines in Page(path).blocks:
            if language not in SHELL_LANGUAGES:
                continue
            text = re.sub(r"\\\s*\n", " ", "\n".join(re.sub(r"\s+#.*$", "", line) for line in lines))
            for offset, command in enumerate(text.splitlines()):
                if command.strip().startswith("edgeopt "):
                    found.append((f"{path.relative_to(ROOT)}:{first + offset}", command.strip()))
    return found


def shortened(command: str) -> list[str]:
    args = shlex.split(command)[1:]
    for i, arg in enumerate(args[:-1]):
        if arg in SHORTER:
            args[i + 1] = SHORTER[arg]
    if args[0] in EPOCHS_BY_DEFAULT and "--epochs" not in args:
        args += ["--epochs", "1"]
    if args[0] in TIMED_BY_DEFAULT:
        args += [item for option in ("--seconds", "--iters", "--warmup") if option not in args
                 for item in (option, SHORTER[option])]
    return args


def test_the_quick_start_commands_run_as_written(tmp_path):
    commands = docs_commands()
    assert len(commands) >= 15, commands  # the pages still show their quick starts
    ran, failed = [], []
    for where, command in commands:
        if any(mention in command for mention in NOT_RUN):
            continue
        args = shortened(command)
        folder = tmp_path / where.partition(":")[0].replace("/", "-")
        folder.mkdir(exist_ok=True)
        proc = edgeopt(*args, cwd=folder, timeout=600)
        ran.append(args[0])
        if proc.returncode != 0:
            failed.append(f"{where}: {command}\n    {(proc.stderr or proc.stdout).strip()[-600:]}")
    assert not failed, "docs commands that fail:\n" + "\n".join(failed)
    assert {"train", "export", "eval", "quantize", "prune", "distill", "build", "bench", "profile", "inspect", "ladder",
            "exits"} <= set(ran)
