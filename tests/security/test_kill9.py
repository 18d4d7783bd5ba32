"""kill -9 anywhere: each long command is killed at seeded points of its run, then run again (with
--resume where it has one); no half-written result is ever visible, and the finished result equals an
uninterrupted run's: the same weights, the same artifact bytes, the same choice."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeopt.core.artifact import Artifact

pytestmark = pytest.mark.slow
SEED = 1234
TINY = ["--threads", "1", "--seed", "0"]


def tensors(path: Path) -> dict[str, bytes]:
    """A checkpoint's tensors as bytes (exact comparison), read with safetensors (a half-written file fails)."""
    from safetensors.numpy import load_file

    return {name: array.tobytes() for name, array in load_file(str(path)).items()}


def artifact_files(path: Path) -> dict[str, str]:
    return {name: record["sha256"] for name, record in Artifact.open(path).manifest["files"].items()}


def chosen(path: Path) -> tuple[str, dict[str, str]]:
    results = json.loads((path / "results.json").read_text())
    return results["chosen"]["key"], artifact_files(path / "best")


def search_is_whole(path: Path) -> bool:
    """A search folder mid-run is not a result; what a user reads from it is: best/ and results.json."""
    if (path / "best").exists():
        Artifact.open(path / "best")
    if (path / "results.json").exists():
        json.loads((path / "results.json").read_text())
    return True


def commands(checkpoint: Path) -> dict:
    """name -> (arguments given an output folder, the output to check, how to read the result, resume flag, kills)."""
    ckpt = str(checkpoint)
    return {
        "train": (lambda out: ["train", "digits", "--arch", "edgeopt.models.zoo:tiny_cnn", "--epochs", "6", "--no-augment",
                               "--optimizer", "adamw", "--lr", "0.01", "--out", str(out / "model.safetensors"), *TINY],
                  "model.safetensors", tensors, ["--resume"], 1),
        "export": (lambda out: ["export", ckpt, "-b", "onnxruntime", "--precision", "int8", "--calibrate", "digits",
                                "-o", str(out / "artifact"), "--threads", "1"],
                   "artifact", artifact_files, [], 1),  # atomic: the same command again is its resume
        "quantize": (lambda out: ["quantize", ckpt, "--data", "digits", "--backend", "openvino", "--out",
                                  str(out / "artifact"), "--seed", "0", "--threads", "1"],
                     "artifact", artifact_files, ["--resume"], 1),
        "prune": (lambda out: ["prune", ckpt, "--data", "digits", "--ratio", "0.5", "--epochs", "2", "--out",
                               str(out / "pruned.safetensors"), *TINY],
                  "pruned.safetensors", tensors, ["--resume"], 1),
        "optimize": (lambda out: ["optimize", ckpt, "--data", "digits", "--out", str(out / "search"), "--backends",
                                  "onnxruntime", "--no-int8", "--prune-ratios", "0.5", "--epochs", "2", "--resolutions",
                                  "none", "--students", "none", "--priority", "accuracy", "--max-accuracy-drop", "100",
                                  "--budget", "10m", "--seed", "0"],
                     "search", chosen, ["--resume"], 1),
    }


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt", *args], capture_output=True, text=True, cwd=cwd, timeout=900)


def visible_result_is_whole(path: Path, read) -> bool:
    """Absent, or readable whole: never a half-written result under the name a user looks for."""
    if not path.exists():
        return True
    try:
        (search_is_whole if read is chosen else read)(path)
        return True
    except Exception:
        return False


def kill_and_resume(name: str, command: tuple, root: Path) -> list[tuple[str, bool]]:
    """Run ``name`` once whole, then kill it at its seeded points and finish each run; returns, per point,
    what happened and whether the process was still running when killed."""
    make, output, read, resume, kills = command
    rng = random.Random(f"{SEED}-{name}")  # each command its own points, whatever runs beside it
    reference_out = root / name / "reference"
    reference_out.mkdir(parents=True)
    started = time.monotonic()
    done = run(make(reference_out), reference_out)
    duration = time.monotonic() - started
    assert done.returncode == 0, (name, done.stderr[-2000:])
    expected = read(reference_out / output)
    points = []
    for point in range(kills):
        # a run can be quicker than the reference (the command beside it finished): a kill that finds it done
        # is checked all the same (a resume keeps the finished result), then tried again earlier, so every
        # point also kills a running process
        for attempt in range(3):
            out = root / name / f"kill{point}-{attempt}"
            out.mkdir()
            delay = rng.uniform(0.15, 0.85) * duration * 0.5 ** attempt
            proc = subprocess.Popen([sys.executable, "-m", "edgeopt", *make(out)], cwd=out,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            was_running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert visible_result_is_whole(out / output, read), (name, point, delay)
            if resume or not (out / output).exists():  # export is atomic: a whole artifact means its run finished
                again = run([*make(out), *resume], out)
                assert again.returncode == 0, (name, point, delay, again.stderr[-2000:])
            assert read(out / output) == expected, (name, point, f"killed after {delay:.1f} s")
            points.append((f"{name} killed at {delay:.1f}/{duration:.1f} s{'' if was_running else ' (had finished)'}",
                           was_running))
            if was_running:
                break
    return points


def test_kill_9_at_seeded_points_then_resume_gives_the_uninterrupted_result(trained, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    checkpoint, _ = trained
    # Two commands at a time (this machine's cores; each runs on one thread): the harness takes half as long,
    # and a kill point is a fraction of its command's uninterrupted run measured under the same sharing.
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(kill_and_resume, name, command, tmp_path)
                for name, command in commands(checkpoint).items()]
        points = [point for run_ in runs for point in run_.result()]
    print("\n".join(line for line, _ in points))
    assert sum(was_running for _, was_running in points) >= 4, points
