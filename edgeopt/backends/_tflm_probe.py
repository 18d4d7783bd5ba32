"""Ask TensorFlow Lite Micro whether a model runs in an arena of N bytes — from a process of its own.

TFLM (tflite-micro 2026-10) does not always fail cleanly when the arena is short: at some sizes
just below what a model needs, its tail allocation underflows and the process dies with a
segmentation fault. So the question is asked of a child process (``python -m
edgeopt.backends._tflm_probe MODEL``) that reads arena sizes on stdin and answers one JSON line each;
a child that dies is an answer too (``crashed``), and the next question starts a new one.

Example:
    >>> with Probe(Path("model.tflite")) as probe:          # doctest: +SKIP
    ...     probe.ask(65536)
    {'arena': 65536, 'runs': True, 'crashed': False, 'stderr': []}
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """TFLM reports why it failed on the C stderr, not in its exception: capture file descriptor 2."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def interpreter(data: bytes, arena: int):
    """A TFLM interpreter that has run once on zeros (so every kernel has prepared and allocated)."""
    from tflite_micro import runtime

    micro = runtime.Interpreter.from_bytes(data, arena_size=arena)
    detail = micro.get_input_details(0)
    micro.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
    micro.invoke()
    return micro


class Probe:
    """A child process that runs one model at the arena sizes it is asked; restarted after a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.child: subprocess.Popen | None = None

    def __enter__(self) -> "Probe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask(self, arena: int) -> dict[str, Any]:
        if self.child is None:
            self.child = subprocess.Popen([sys.executable, "-m", "edgeopt.backends._tflm_probe", str(self.path)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True)
        try:
            self.child.stdin.write(f"{arena}\n")
            self.child.stdin.flush()
            line = self.child.stdout.readline()
        except BrokenPipeError:
            line = ""
        if line:
            return json.loads(line)
        self.close()  # it died on this question
        return {"arena": arena, "runs": False, "crashed": True, "stderr": []}

    def close(self) -> None:
        if self.child is not None:
            with contextlib.suppress(OSError):
                self.child.stdin.close()
            self.child.kill()
            self.child.wait()
            self.child = None


def _serve(path: str) -> None:
    data = Path(path).read_bytes()
    for line in sys.stdin:
        arena = int(line)
        with captured_stderr() as stderr:
            try:
                interpreter(data, arena)
                runs = True
            except RuntimeError:
                runs = False
        print(json.dumps({"arena": arena, "runs": runs, "crashed": False, "stderr": stderr[-5:]}), flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1])
