"""The device agent's HTTP service: measure an uploaded artifact on this device, then forget it.

Endpoints (``/docs`` shows them):

- ``GET /v1/health`` — no token: liveness, and how many artifacts were measured and refused;
- ``GET /v1/device`` — who this device is (``identity.collect``);
- ``POST /v1/measure`` — the body is an artifact bundle (``edgeopt.core.bundle``), optionally with the
  host's probe inputs as a ``probe.npy`` member; query parameters set threads, batch sizes, the
  timing protocol and sustained seconds. The answer: cold load, first call, p50/p90/p99 per batch,
  throughput, peak RSS, sustained drift and temperatures, the raw outputs on the probe inputs
  (base64 .npz) and the device's identity.

Nothing from a request names a path: the bundle is checked whole in memory (``read_bundle``),
then written to a folder the agent names, measured in a child process (timeout, memory cap)
and deleted. One upload and measurement runs at a time, so two never share the CPU; another is
answered 503 with Retry-After — like a missing token (401), before a byte of its upload is read.
Refusals are one ``{"error": "..."}`` sentence: 400 bad bundle or parameters, 401 token, 408 upload
not received within ``--body-timeout``, 413 too large, 422 the device could not run it, 503 busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edgeopt.agent.identity import AGENT_BACKENDS
from edgeopt.agent.wire import encode_arrays
from edgeopt.core.errors import ArtifactError, BackendError, ConfigError, EdgeoptError, InputError
from edgeopt.core.formats import npy_header
from edgeopt.runtime.http import STATUS as SHARED_STATUS
from edgeopt.runtime.http import answer_errors, bearer_check, read_capped_body

log = logging.getLogger("edgeopt.agent")
PROBE = "probe.npy"
MAX_PROBE_SAMPLES = 64
STORE_ENTRY = re.compile(r"^[0-9a-f]{32}$")  # the folders the agent itself names


@dataclass(frozen=True)
class AgentSettings:
    token: str
    store: Path
    name: str | None = None
    kind: str | None = None  # the device profile this is (e.g. rpi4b): the host's estimator files by it
    max_upload_bytes: int = 256 << 20
    memory_cap_mb: float | None = None
    timeout_s: float = 900.0
    body_timeout_s: float = 300.0  # an upload not all received by then is answered 408: the agent is free again
    max_sustained_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.token or len(self.token) < 8:
            raise ConfigError("the agent needs a token of at least 8 characters (set it in the --token-env variable)")
        if self.max_upload_bytes < 1 or self.timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ConfigError("--max-upload-mb, --timeout and --body-timeout must be positive")


class Busy(EdgeoptError):
    pass


STATUS = {**SHARED_STATUS, Busy: 503, ArtifactError: 400, BackendError: 422}


class Agent:
    """The agent's state: its identity, its store, its one-at-a-time lock and its counters."""

    def __init__(self, settings: AgentSettings) -> None:
        from edgeopt.agent import identity

        self.settings = settings
        self.identity = identity.collect(settings.name, settings.kind, settings.memory_cap_mb)
        self.lock = asyncio.Lock()
        self.measured = self.refused = 0
        settings.store.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in settings.store.iterdir():  # what a killed agent left behind; only folders it names
            if STORE_ENTRY.match(leftover.name) and leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)

    def count_refusal(self) -> None:
        self.refused += 1

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the agent for one upload and its measurement, or refuse at once (before the upload is read)."""
        if self.lock.locked():
            raise Busy("this agent is measuring another artifact (one at a time keeps figures honest); retry shortly")
        async with self.lock:
            yield

    def measure(self, body: bytes, options: dict[str, Any]) -> dict[str, Any]:
        """Check the bundle ``body``, measure it in a child process and delete it (blocking: run it in a thread)."""
        from edgeopt.core.bundle import BundleLimits, read_bundle
        from edgeopt.measure.latency import TimingConfig
        from edgeopt.measure.process import MeasureConfig, time_artifact

        bundle = read_bundle(body, BundleLimits(max_bytes=self.settings.max_upload_bytes),
                             backends=tuple(b for b in self.identity["backends"] if b in AGENT_BACKENDS),
                             extras=(PROBE,))
        probe = _probe_inputs(bundle.extras.get(PROBE), _input_spec(bundle.manifest))  # checked before any write
        folder = self.settings.store / uuid.uuid4().hex
        try:
            artifact = bundle.write(folder)
            config = MeasureConfig(threads=options["threads"], batches=options["batches"],
                                   timing=TimingConfig(**options["timing"]), timeout_s=self.settings.timeout_s,
                                   sustained_s=options["sustained_s"], memory_cap_mb=self.settings.memory_cap_mb,
                                   keep_outputs=probe is not None)
            timing = time_artifact(artifact.path, config, probe)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        outputs = timing.pop("outputs", None)
        return {"device": self.identity, "threads": config.thread_count,
                "artifact": {"backend": artifact.backend, "precision": artifact.precision,
                             "size_bytes": artifact.size_bytes},
                "timing": timing, "outputs": encode_arrays(outputs) if outputs is not None else None}


def _input_spec(manifest: dict[str, Any]):
    from edgeopt.core.spec import InputSpec

    try:
        return InputSpec.from_dict(manifest["input"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"the bundle's manifest has a malformed input spec ({exc}); pack the artifact again") from None


def _probe_inputs(data: bytes | None, spec) -> np.ndarray | None:
    """The host's probe inputs: a plain .npy (never a pickle) of the artifact's input shape and dtype.

    Its header is checked against the spec and against the bytes that follow it before numpy
    allocates anything: a header may claim any shape, and numpy would allocate what it claims."""
    if data is None:
        return None
    shape, dtype = _probe_header(data)
    expected = tuple(d for d in spec.shape[1:])
    if len(shape) != len(spec.shape) or tuple(shape[1:]) != expected or not 1 <= shape[0] <= MAX_PROBE_SAMPLES:
        raise InputError(f"{PROBE} has shape {shape}; the artifact takes (N, {', '.join(map(str, expected))}) "
                         f"with 1 <= N <= {MAX_PROBE_SAMPLES}")
    if dtype != np.dtype(spec.dtype):
        raise InputError(f"{PROBE} is {dtype}; the artifact takes {spec.dtype}")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{PROBE} is not a plain .npy array ({exc}); write it with numpy.save") from None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{PROBE} holds NaN or Inf values; send finite inputs")
    return array


def _probe_header(data: bytes) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a .npy header declares, once its data is known to be exactly that many bytes."""
    try:
        shape, dtype, held = npy_header(data)
    except ValueError as exc:
        raise InputError(f"{PROBE} is not a plain .npy array ({exc}); write it with numpy.save") from None
    if dtype.hasobject:
        raise InputError(f"{PROBE} holds Python objects (a pickle); send plain numbers written with numpy.save")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != held:
        raise InputError(f"{PROBE}'s header declares shape {shape} of {dtype} ({claimed:,} bytes) but {held:,} bytes "
                         "follow it; write it with numpy.save")
    return shape, dtype


def _batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"batches takes comma-separated sizes like 1,8; got {text!r}") from None
    if not batches or len(batches) > 8 or any(not 1 <= b <= 256 for b in batches):
        raise ConfigError(f"batches takes 1 to 8 sizes between 1 and 256; got {text!r}")
    return batches


MEASURE_BODY = {"requestBody": {"required": True, "content": {
    "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(settings: AgentSettings) -> FastAPI:
    """The agent's FastAPI application (``edgeopt agent`` serves it with uvicorn)."""
    agent = Agent(settings)
    app = FastAPI(title="edgeopt device agent", version="1",
                  description="Measures uploaded ONNX / OpenVINO / ExecuTorch artifacts on this device.")
    app.state.agent = agent

    answer_errors(app, STATUS, log, retry_after={Busy: "5"}, on_refusal=agent.count_refusal)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        agent.count_refusal()
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    token = bearer_check(settings.token, "this agent needs 'Authorization: Bearer <token>' with its token "
                                         "(the host passes it with --agent-token or EDGEOPT_AGENT_TOKEN)")

    @app.get("/v1/health", tags=["health"])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "busy": agent.lock.locked(), "measured": agent.measured, "refused": agent.refused}

    @app.get("/v1/device", tags=["device"], dependencies=[Depends(token)])
    async def device() -> dict[str, Any]:
        return agent.identity

    @app.post("/v1/measure", tags=["measure"], dependencies=[Depends(token)], openapi_extra=MEASURE_BODY)
    async def measure(request: Request,
                      threads: int | None = Query(None, ge=1, le=1024, description="intra-op threads (default: every usable CPU)"),
                      batches: str = Query("1", max_length=64, description="batch sizes, e.g. 1,8"),
                      warmup: int = Query(10, ge=0, le=10_000),
                      min_iters: int = Query(50, ge=1, le=1_000_000),
                      min_seconds: float = Query(2.0, ge=0, le=600),
                      max_seconds: float = Query(60.0, gt=0, le=3600),
                      sustained_s: float = Query(0.0, ge=0, description="also run batch 1 back to back this long")
                      ) -> dict[str, Any]:
        if sustained_s > settings.max_sustained_s:
            raise ConfigError(f"sustained_s is at most {settings.max_sustained_s:g} s on this agent")
        options = {"threads": threads, "batches": _batches(batches), "sustained_s": sustained_s,
                   "timing": {"warmup": warmup, "min_iters": min_iters, "min_seconds": min_seconds,
                              "max_seconds": max_seconds}}
        async with agent.turn():  # busy is answered here, before the upload is read
            body = await _read_upload(request, settings)
            result = await asyncio.to_thread(agent.measure, body, options)
        agent.measured += 1
        return result

    return app


async def _read_upload(request: Request, settings: AgentSettings) -> bytes:
    body = await read_capped_body(request, settings.max_upload_bytes, "the upload", "--max-upload-mb",
                                  settings.body_timeout_s)
    if not body:
        raise ArtifactError("the upload is empty; send an artifact bundle (edgeopt.core.bundle.pack) as the body")
    return body
