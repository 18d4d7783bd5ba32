"""Clients that misbehave on purpose, for the tests of both HTTP services: a connection that sends a
request's headers (and perhaps the first bytes of its body) and then stalls, and the peak memory of the
service while something is done to it."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator


def send_head(url: str, path: str, headers: dict[str, str], start: bytes = b"") -> socket.socket:
    """A connection to ``url`` that has sent a POST's headers and ``start``, and then sends nothing more."""
    host, _, port = url.removeprefix("http://").partition(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode() + start)
    return sock


def reply_of(sock: socket.socket, timeout: float) -> tuple[int | None, bool]:
    """What the service answered on ``sock`` within ``timeout`` seconds: the HTTP status (None if none came)
    and whether it then closed the connection."""
    sock.settimeout(max(timeout, 0.01))
    data, closed = b"", False
    try:
        while chunk := sock.recv(65536):
            data += chunk
        closed = True
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    finally:
        sock.close()
    return (int(data.split()[1]) if data.startswith(b"HTTP/") else None), closed


@contextlib.contextmanager
def rss_peak(pid: int) -> Iterator[dict[str, float]]:
    """``{"before": MB, "peak": MB}``: process ``pid``'s resident memory as the block starts and its peak
    while the block runs. Writing 5 to /proc/PID/clear_refs resets the high-water mark that
    /proc/PID/status reports as VmHWM (Linux), so the peak is exact, not sampled."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    seen = {"before": _status_mb(pid, "VmHWM")}
    yield seen
    seen["peak"] = _status_mb(pid, "VmHWM")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"/proc/{pid}/status has no {field}")
