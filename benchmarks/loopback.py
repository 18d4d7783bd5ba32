"""What the benchmarks that run a server share: a free port on the loopback interface, and
``edgeopt.serve.serve`` in its own process (the library, as `edgeopt serve` runs it; never the CLI)."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_server(artifacts: dict[str, str], port: int, threads: int | None, settings, score_threshold: float) -> None:
    from edgeopt.serve import serve

    serve({name: Path(folder) for name, folder in artifacts.items()}, port=port, threads=threads, settings=settings,
          score_threshold=score_threshold)


class Server:
    """``edgeopt.serve.serve`` of ``artifacts`` (name -> folder) under ``settings`` (a ServeSettings) in its own
    process (spawned: a fresh interpreter, as `edgeopt serve` is), on a free loopback port, ready when built."""

    def __init__(self, artifacts: dict[str, Path], settings, threads: int | None = None, score_threshold: float = 0.3,
                 ready_within: float = 60) -> None:
        import multiprocessing

        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = time.perf_counter()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=_run_server, args=({n: str(f) for n, f in artifacts.items()}, self.port, threads, settings, score_threshold))
        self.proc.start()
        while True:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if not self.proc.is_alive() or time.perf_counter() - started > ready_within:
                    raise RuntimeError(f"the server did not start (exit code {self.proc.exitcode})") from None
            time.sleep(0.01)
        self.ready_seconds = time.perf_counter() - started

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        import httpx

        text = httpx.get(f"{self.url}/metrics").text
        return float(next(l.split()[1] for l in text.splitlines() if l.startswith("process_resident_memory_bytes"))) / 2**20

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: the server drains, then exits
        self.proc.join(30)
