"""The host's side of a device agent: send an artifact, get the device's measurement back.

Standard library HTTP only (the host needs no extra package). A connection that fails, or
an agent that is busy or restarting, is retried with exponential backoff; after the last
try ``AgentUnavailable`` says so, and the caller records the candidate as not measured
(never silently estimated). A refusal (bad token, a bundle the agent will not take, a model
the device cannot run) is not retried: it is an answer.

Example:
    >>> agent = AgentClient("http://192.168.1.20:8470", token)                    # doctest: +SKIP
    >>> result = agent.measure(Path("out/best"), MeasureConfig(), probe_inputs)   # doctest: +SKIP
    >>> result["timing"]["batches"]["1"]["p50"], label(result["device"])          # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.errors import BackendError, ConfigError

RETRIED = (502, 503, 504)


class AgentUnavailable(BackendError):
    """The agent could not be reached (or stayed busy) through every retry."""


@dataclass(frozen=True)
class AgentTarget:
    """Where a device agent is (for ``optimize``): its URL and token; ``retries`` with doubling waits from
    ``backoff_s``."""

    url: str
    token: str = field(repr=False)
    retries: int = 4
    backoff_s: float = 1.0

    def connect(self) -> "AgentClient":
        return AgentClient(self.url, self.token, retries=self.retries, backoff_s=self.backoff_s)


class AgentClient:
    """One agent at ``url`` with its bearer ``token``; ``retries`` tries after the first, doubling waits."""

    def __init__(self, url: str, token: str, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 1800.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"--agent takes the agent's URL, like http://192.168.1.20:8470; got {url!r}")
        if not token:
            raise ConfigError("an agent needs its token: pass --agent-token or set EDGEOPT_AGENT_TOKEN")
        self.url, self.token = url.rstrip("/"), token
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s

    def identity(self) -> dict[str, Any]:
        """The device's identity (``GET /v1/device``)."""
        return self._call("GET", "/v1/device", None, timeout_s=30)

    def measure(self, artifact: Path, config, inputs: np.ndarray | None = None) -> dict[str, Any]:
        """Measure ``artifact`` on the device under ``config`` (a MeasureConfig: threads None = the device's
        CPUs); ``inputs``: probe samples, whose raw outputs come back decoded in ``result["outputs"]``."""
        from edgeopt.agent.wire import decode_arrays, npy_bytes
        from edgeopt.core.bundle import pack

        extras = {"probe.npy": npy_bytes(inputs[:64])} if inputs is not None else {}
        timing = config.timing
        query = {"batches": ",".join(map(str, config.batches)), "warmup": timing.warmup, "min_iters": timing.min_iters,
                 "min_seconds": timing.min_seconds, "max_seconds": timing.max_seconds, "sustained_s": config.sustained_s}
        if config.threads:
            query["threads"] = config.threads
        result = self._call("POST", "/v1/measure?" + urllib.parse.urlencode(query), pack(Path(artifact), extras),
                            timeout_s=self.timeout_s)
        if result.get("outputs"):
            result["outputs"] = decode_arrays(result["outputs"])
        return result

    def _call(self, method: str, path: str, body: bytes | None, timeout_s: float) -> dict[str, Any]:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url + path, data=body, method=method, headers={
                "Authorization": f"Bearer {self.token}", "Content-Type": "application/x-tar"})
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                message = _message(exc)
                if exc.code in RETRIED:
                    last = f"HTTP {exc.code}: {message}"
                    continue
                if exc.code == 401:
                    raise ConfigError(f"the agent at {self.url} refused the token: {message}") from None
                raise BackendError(f"the agent at {self.url} refused: {message}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
        raise AgentUnavailable(f"the agent at {self.url} did not answer after {self.retries + 1} tries ({last}); "
                               "is it running? (`edgeopt agent` on the device)")


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("error") or exc.reason
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)
