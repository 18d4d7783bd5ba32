"""``edgeopt serve``: artifacts behind the Open Inference Protocol v2, torch-free.

Runs from the lean edge install (``pip install 'edgeopt[edge-onnxruntime]'``): FastAPI and
uvicorn, ONNX Runtime or OpenVINO, numpy, Pillow — no torch. See ``app`` for the endpoints,
``batching`` for the queue, ``repository`` for loading and swapping versions.

Example:
    >>> from edgeopt.serve import serve                                   # doctest: +SKIP
    >>> serve({"neu": Path("out/neu-ort-int8")}, port=8000)                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

from edgeopt.serve.app import ServeSettings, create_app
from edgeopt.serve.repository import ModelRepository

__all__ = ["ServeSettings", "create_app", "serve", "ModelRepository"]
log = logging.getLogger("edgeopt.serve")


def serve(artifacts: dict[str, Path], watch: Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, threads: int | None = None, score_threshold: float = 0.3) -> None:
    """Load, verify and warm every model, then serve until SIGINT/SIGTERM (which drain in-flight requests).

    An artifact may also be a bundle file (``edgeopt pack``), and so may a version in ``watch``: it is
    checked and unpacked into a private scratch folder, removed when the server stops."""
    settings = settings or ServeSettings()
    started = time.perf_counter()
    repository = ModelRepository(artifacts, watch, threads=threads, score_threshold=score_threshold,
                                 control=settings.control, instances=settings.instances)
    try:
        with _sigterm_unwinds():
            _run(repository, host, port, settings, started)
    finally:
        repository.close()


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Make SIGTERM end the process by unwinding (exit status 0), so ``finally`` blocks run.

    uvicorn drains on SIGTERM, then raises the signal again under the handler it found; the default
    one would kill the process on the spot and leave the scratch folder behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are the main thread's; a server run elsewhere is stopped by its caller
        return

    def unwind(signum, frame) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(repository: ModelRepository, host: str, port: int, settings: ServeSettings, started: float) -> None:
    import uvicorn

    repository.load_initial()
    for model in repository.models.values():
        log.info("model %s version %s (%s %s, %s): loaded, verified and warmed in %.3f s", model.name, model.version,
                 model.artifact.backend, model.artifact.precision, model.task.name, model.load_seconds)
    log.info("all models ready %.3f s after the server began loading", time.perf_counter() - started)
    config = uvicorn.Config(create_app(repository, settings), host=host, port=port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=settings.drain_seconds,
                            timeout_keep_alive=30)  # clients reuse connections; a short idle close races their next send
    uvicorn.Server(config).run()
