"""Ask TensorFlow Lite Micro whether a model runs in an arena of N bytes — from a process of its own.

TFLM (tflite-micro 2026-10) does not always fail cleanly when the arena is short: at some sizes
just below what a model needs, its tail allocation underflows and the process dies with a
segmentation fault. So the question is asked of a child process (``python -m
edgeopt.backends._tflm_probe MODEL``) that reads arena sizes on stdin and answers one JSON line each;
a child that dies is an answer too (``crashed``), and the next question starts a new one. A child that
does not answer within ``ANSWER_S`` (a model whose loop never ends) is killed and said so (``timed_out``);
it also stops itself past ``CPU_LIMIT_S`` of CPU time, so a parent killed meanwhile leaves nothing running.
The child starts without the current folder on its import path: a ``numpy.py`` lying where a server runs
is never imported.

Example:
    >>> with Probe(Path("model.tflite")) as probe:          # doctest: +SKIP
    ...     probe.ask(65536)
    {'arena': 65536, 'runs': True, 'crashed': False, 'timed_out': False, 'missing': [], 'stderr': []}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ANSWER_S = 120.0  # one allocation and one run of a model a microcontroller could hold take a second or two here
CPU_LIMIT_S = 600
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([^']+)'")
SOURCE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding this edgeopt, for the child to import it
# the child's command: runpy instead of ``-m``, after dropping the current folder ``-c`` puts first on sys.path
# (absent under PYTHONSAFEPATH) and adding the folder this edgeopt was imported from
CHILD = ("import runpy, sys; sys.path[:1] = [] if sys.path[:1] == [''] else sys.path[:1]; "
         f"sys.path.append({SOURCE_ROOT!r}); "
         "runpy.run_module('edgeopt.backends._tflm_probe', run_name='__main__', alter_sys=True)")
KILLED = (-9, -24)  # SIGKILL, SIGXCPU: past its CPU limit (or killed), not a crash of TFLM


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
        self.pending = b""  # bytes read from the child past the last full line
        self.errors = None  # the child's stderr: why it failed, when it did not answer

    def __enter__(self) -> "Probe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask(self, arena: int) -> dict[str, Any]:
        if self.child is None:
            self.errors = tempfile.TemporaryFile()
            self.child = subprocess.Popen([sys.executable, "-c", CHILD, str(self.path.resolve())],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors)
            self.pending = b""
        try:
            self.child.stdin.write(f"{arena}\n".encode())
            self.child.stdin.flush()
        except BrokenPipeError:
            pass  # it died: the read below says so
        answer = self._answer()
        if isinstance(answer, dict):
            return answer
        failed = {"arena": arena, "runs": False, "crashed": False, "timed_out": answer == "timeout", "missing": [],
                  "stderr": []}
        if answer is None:  # it exited: a signal is TFLM crashing (or the CPU limit); a status is Python failing
            code = self._exit_code()
            failed["timed_out"] = code in KILLED
            failed["crashed"] = code is not None and code < 0 and code not in KILLED
            if code is not None and code > 0:
                failed["error"] = self._stderr_tail() or f"it exited with status {code}"
        self.close()
        return failed

    def _exit_code(self) -> int | None:
        try:
            return self.child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def _stderr_tail(self) -> str:
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])

    def _answer(self) -> dict[str, Any] | str | None:
        """The child's next JSON line; None when it died, "timeout" past ``ANSWER_S``. Other output is skipped.

        Lines are cut from raw reads of the pipe, not a buffered reader's: a buffer could hold the answer
        while ``select`` waits on an empty pipe."""
        deadline = time.monotonic() + ANSWER_S
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    answer = json.loads(line)
                    if isinstance(answer, dict) and "runs" in answer:
                        return answer
            ready, _, _ = select.select([self.child.stdout], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                return "timeout"
            chunk = os.read(self.child.stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self.pending += chunk

    def close(self) -> None:
        if self.child is not None:
            with contextlib.suppress(OSError):
                self.child.stdin.close()
            self.child.kill()
            self.child.wait()
            self.child = None
        if self.errors is not None:
            self.errors.close()
            self.errors = None


def _serve(path: str) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_CPU)  # a soft limit may not exceed the hard one it inherits
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S if hard == resource.RLIM_INFINITY else min(CPU_LIMIT_S, hard),
                                             hard))
    data = Path(path).read_bytes()
    for line in sys.stdin:
        arena = int(line)
        failure = None
        with captured_stderr() as stderr:
            try:
                interpreter(data, arena)
                runs = True
            except Exception as exc:  # noqa: BLE001 - TFLM's wrapper raises RuntimeError, a damaged model TypeError & co.
                runs, failure = False, f"{type(exc).__name__}: {exc}"
        stderr += [failure] if failure else []
        missing = sorted({m.group(1) for text in stderr for m in [MISSING_OP.search(text)] if m})
        print("\n" + json.dumps({"arena": arena, "runs": runs, "crashed": False, "timed_out": False, "missing": missing,
                          "stderr": stderr[-5:]}), flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1])
