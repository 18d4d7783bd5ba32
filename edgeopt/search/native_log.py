"""Send what native libraries print to a file: ExecuTorch's cpuinfo and threadpool lines,
OpenVINO's and ONNX Runtime's warnings are written by C++ straight to the process's
stdout and stderr file descriptors, past Python's ``sys.stdout``.

While a search builds and measures a candidate, both descriptors point at that
candidate's log file; the console the caller prints progress on must hold its own
duplicate of the terminal (``edgeopt.report.console.make_console(own_stdout=True)``).

Example:
    >>> with native_output_to(Path("out/search/candidates/abc/build.log")):   # doctest: +SKIP
    ...     build(recipe, context, out)
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def native_output_to(path: Path) -> Iterator[Path]:
    """Point file descriptors 1 and 2 at ``path`` (appended) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab", buffering=0) as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield path
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
