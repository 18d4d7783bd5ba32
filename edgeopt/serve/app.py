"""The HTTP server: Open Inference Protocol v2 over FastAPI, one dynamic batcher per model.

Endpoints (``/docs`` shows them):

- ``GET /v2/health/live``, ``GET /v2/health/ready`` — no token needed;
- ``GET /v2``, ``GET /v2/models/{name}[/versions/{v}]``, ``.../ready`` — metadata;
- ``POST /v2/models/{name}[/versions/{v}]/infer`` — tensors as JSON or with the binary-tensor
  extension (what ``tritonclient`` sends);
- ``POST /v2/models/{name}[/versions/{v}]/predict`` — a JPEG/PNG body; the artifact's own
  preprocessing; labels and scores, or boxes in the image's pixels;
- ``GET /metrics`` — Prometheus.

Every refusal is one JSON ``{"error": "..."}`` sentence: 400 bad input, 401 token, 404 no such
model, 408 body not received within ``--body-timeout`` (the connection is closed), 413 body too large
(bytes, or JSON values past what the model takes in one request), 503 queue full (with Retry-After),
504 timed out.

A request holds a place in its model's queue (``--max-queue``) only once its body has arrived: a client
that sends a body slowly delays itself, never the model, and the deadline closes it. Bodies still
arriving may hold ``READING_BODIES`` full-size bodies' bytes together; one more byte is a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from edgeopt.core.errors import ConfigError, EdgeoptError, InputError
from edgeopt.runtime.controller import ControlConfig
from edgeopt.serve.batching import Answer, Batcher, BatchStats, Overloaded, Plan, RequestTimeout
from edgeopt.serve.metrics import UNKNOWN_MODEL, ServerMetrics
from edgeopt.serve.protocol import HEADER_LENGTH, encode_response, parse_request
from edgeopt.serve.repository import ModelRepository, ServedLadder, ServedModel
from edgeopt.runtime.http import STATUS as SHARED_STATUS
from edgeopt.runtime.http import answer_errors, bearer_check, read_capped_body, status_of

log = logging.getLogger("edgeopt.serve")
SERVER_NAME = "edgeopt"
INLINE_BYTES = 4 << 20  # binary bodies up to this are parsed on the event loop (a copy, no decoding)
READING_BODIES = 8  # bodies still arriving hold at most this many times --max-body-mb together
JSON_SLACK = 1024  # values of an infer request's own envelope (names, shape, outputs, parameters)


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue: int = 64  # requests per model; one more is answered 503
    request_timeout_s: float = 10.0
    body_timeout_s: float = 10.0  # a body not all received this long after reading began is answered 408
    max_body_bytes: int = 32 << 20
    max_pixels: int = 16_000_000  # decoded pixels of an uploaded image
    token: str | None = None
    poll_seconds: float = 2.0  # how often a --model-repository is looked at
    drain_seconds: float = 10.0  # SIGTERM: in-flight requests get this long to finish
    target_p99_ms: float | None = None  # a ladder answers with the most accurate rung that meets it
    # batches of one model that run at once, each on its share of the threads (Triton's instance count): on a
    # few cores, two batches on one thread each beat one batch on two (no thread waits for a straggler)
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.instances < 1:
            raise ConfigError("--max-batch, --max-queue and --instances must be at least 1")
        if self.max_queue_delay_ms < 0 or self.request_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ConfigError("--max-queue-delay-ms must be >= 0, and --request-timeout and --body-timeout > 0")
        self.control  # checks the target

    @property
    def control(self) -> ControlConfig | None:
        """How a ladder picks its rungs; None (no target): ladders are refused."""
        return None if self.target_p99_ms is None else ControlConfig(target_ms=self.target_p99_ms)


class NotFound(EdgeoptError):
    pass


STATUS = {**SHARED_STATUS, NotFound: 404, Overloaded: 503, RequestTimeout: 504}


class Server:
    """The state behind the routes: the repository, a batcher per model, metrics."""

    def __init__(self, repository: ModelRepository, settings: ServeSettings) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = ServerMetrics()
        self.batchers: dict[str, Batcher] = {}
        self.admitted: dict[str, int] = {}  # requests per model between their body's arrival and their answer
        self.reading = 0  # bytes held by bodies still arriving, all models together
        self._retiring: set[asyncio.Task] = set()  # batchers replaced by a swap, finishing what they hold
        self.ready = False

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        for model in self.repository.models.values():
            self._serve(model)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await asyncio.gather(*(b.stop() for b in self.batchers.values()), *self._retiring)

    async def watch(self) -> None:
        """Poll the repository; load new versions off the event loop and swap them in when warm."""
        trim_due = False
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            if trim_due:  # a poll after the swap: batches on the old version have finished and let it go
                await asyncio.to_thread(return_freed_memory)
                trim_due = False
            for name, version, path in self.repository.pending():
                model = await asyncio.to_thread(self.repository.try_load, name, version, path)
                if model is None:
                    self.metrics.refused.labels(name).inc()
                else:
                    self._serve(model)
                trim_due = True

    def _serve(self, model: ServedModel) -> None:
        max_batch = model.preferred_batch(self.settings.max_batch)
        plan = self._plan(model, max_batch)
        instances = self.settings.instances
        if instances > 1 and (plan.controller is not None or not model.runs_concurrently):
            instances = 1
            why = ("a ladder or an early-exit model (its controller plans serial work)" if plan.controller is not None else
                   f"a {model.artifact.backend} artifact (its session holds one set of buffers)")
            log.warning("%s is %s: its batches run one at a time (--instances applies to single ONNX Runtime "
                        "models)", model.name, why)
        batcher = self.batchers.get(model.name)
        if batcher is None or batcher.instances != instances:  # first version, or a model became a ladder (or back)
            fresh = Batcher(plan, max_batch, self.settings.max_queue_delay_ms / 1000, self.settings.max_queue,
                            on_batch=lambda stats, name=model.name: self._on_batch(name, stats), instances=instances)
            fresh.start()
            self.batchers[model.name] = fresh
            if batcher is not None:  # what the old one holds finishes on the old version
                retiring = asyncio.get_running_loop().create_task(batcher.stop())
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
        else:
            batcher.max_batch = max_batch
            batcher.plan = plan  # batches already running finish on the old version
        self.repository.publish(model)
        self.metrics.load_seconds.labels(model.name).set(model.load_seconds)
        self.metrics.version.labels(model.name).set(float(model.version) if model.version.isdigit() else 0)

    def _plan(self, model: ServedModel, max_batch: int) -> Plan:
        if not isinstance(model, ServedLadder):
            return Plan.single(model)
        controller = model.controller(max_batch)
        for rung in model.rung_names:  # every rung's series from the start: a dashboard sees the zeros
            self.metrics.rung_answers.labels(model.name, rung)
        return Plan(tuple(model.rungs), model.rung_names, controller)

    def _on_batch(self, name: str, stats: BatchStats) -> None:
        self.metrics.batch_size.labels(name).observe(stats.rows)
        self.metrics.queue_time.labels(name).observe(stats.queued_seconds)
        self.metrics.run_time.labels(name).observe(stats.run_seconds)
        if stats.rung is not None and not stats.failed:
            self.metrics.current_rung.labels(name).set(stats.rung_index)
            self.metrics.rung_answers.labels(name, stats.rung).inc(stats.requests)
            for seconds in stats.answered_seconds:
                self.metrics.rung_latency.labels(name, stats.rung).observe(seconds)

    # -- lookups ------------------------------------------------------------------
    def model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.repository.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.repository.models)) or "none"
            raise NotFound(f"no model named {name!r} is served here (served: {known})")
        if version is not None and version != model.version:
            raise NotFound(f"model {name!r} serves version {model.version}, not {version!r}")
        return model

    @contextlib.asynccontextmanager
    async def observed(self, name: str, endpoint: str) -> AsyncIterator[None]:
        """Count and time the request. A name that is not served is counted under one label,
        ``UNKNOWN_MODEL``: names from URLs would otherwise grow /metrics (and memory) without end."""
        started, status = time.perf_counter(), 200
        try:
            yield
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's code for it); nothing was answered
            raise
        except BaseException as exc:
            status = status_of(exc, STATUS)
            raise
        finally:
            label = name if name in self.repository.models else UNKNOWN_MODEL
            self.metrics.requests.labels(label, endpoint, str(status)).inc()
            self.metrics.latency.labels(label, endpoint).observe(time.perf_counter() - started)
            if name in self.admitted:
                self.metrics.queue_depth.labels(name).set(self.admitted[name])

    def _check_room(self, name: str) -> None:
        if self.admitted.get(name, 0) >= self.settings.max_queue:
            raise Overloaded(f"model {name!r} has {self.settings.max_queue} requests in hand (--max-queue); "
                             "retry shortly")

    async def read_body(self, request: Request, name: str) -> bytes:
        """The body of a request for ``name``, read while holding no place in its queue.

        Refused at once (503) when the model's queue is already full, so an overload costs no reading;
        cut off at ``--max-body-mb`` (413) and ``--body-timeout`` (408); and refused (503) when bodies still
        arriving would together hold more than ``READING_BODIES`` full-size bodies. A trickling body holds
        only the bytes it has sent, so slow senders cannot use up that budget either."""
        self._check_room(name)
        limit, held = READING_BODIES * self.settings.max_body_bytes, 0

        def hold(size: int) -> None:
            nonlocal held
            if self.reading + size > limit:
                raise Overloaded(f"the server is receiving {self.reading / 2**20:.1f} MB of request bodies at once "
                                 f"({READING_BODIES} x --max-body-mb at most); retry shortly")
            self.reading += size
            held += size

        try:
            return await read_capped_body(request, self.settings.max_body_bytes, "the body", "--max-body-mb",
                                          self.settings.body_timeout_s, hold)
        finally:
            self.reading -= held

    def max_json_values(self, model: ServedModel) -> int:
        """The most values a JSON infer request for ``model`` may hold: its input at the batch the server runs
        it at, twice over (nested data opens up to one list per value), plus the envelope's own. A body past
        that is refused before it is parsed: Python's objects for a JSON list cost 10-40x its text."""
        samples = max(self.batchers[model.name].max_batch, model.fixed_batch or 1)
        return 2 * samples * math.prod(model.spec.sample_shape) + JSON_SLACK

    @contextlib.contextmanager
    def admission(self, name: str):
        """Admit a request for ``name`` (its body read) or refuse it at once: the bound covers decoding,
        queueing and running, so an overload costs a 503, not a pile of parsed bodies."""
        self._check_room(name)
        self.admitted[name] = self.admitted.get(name, 0) + 1
        try:
            yield
        finally:
            self.admitted[name] -= 1

    async def infer_rows(self, model: ServedModel, rows: np.ndarray, arrived: float | None = None) -> Answer:
        return await self.batchers[model.name].infer(rows, self.settings.request_timeout_s, arrived)


def return_freed_memory() -> None:
    """Give the memory of released model versions back to the system.

    A replaced version's runtime frees its weights, but glibc keeps freed heap pages for reuse, so
    a server that swaps versions for months would look like it leaks (tens of MB per swap of a
    ResNet-18, all of it returned here). ``malloc_trim`` exists only in glibc; elsewhere this is a
    ``gc.collect`` alone."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def create_app(repository: ModelRepository, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``repository`` (its models already loaded) under ``settings``."""
    settings = settings or ServeSettings()
    server = Server(repository, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        watcher = asyncio.create_task(server.watch()) if repository.watch is not None else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await server.stop()

    app = FastAPI(title="edgeopt inference server", version="2",
                  description="Open Inference Protocol v2 (KServe/Triton) for edgeopt artifacts.", lifespan=lifespan)
    app.state.server = server

    answer_errors(app, STATUS, log, retry_after={Overloaded: "1"})

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    check = bearer_check(settings.token, "this server needs 'Authorization: Bearer <token>' with its token")
    app.router.routes.extend(_infer_routes(server, check))  # before the API routes: these answer /infer
    app.include_router(_protected_routes(server, settings), dependencies=[Depends(check)])
    return app


INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
            "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"}, "data": {"type": "array"}, "parameters": {"type": "object"}}}},
        "outputs": {"type": "array", "items": {"type": "object"}},
        "parameters": {"type": "object"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}}}}}


def _protected_routes(server: Server, settings: ServeSettings) -> APIRouter:
    router = APIRouter()

    @router.get("/v2", tags=["metadata"])
    async def server_metadata() -> dict[str, Any]:
        from edgeopt.core.artifact import installed_versions

        return {"name": SERVER_NAME, "version": installed_versions(("edgeopt",)).get("edgeopt", "dev"),
                "extensions": ["binary_tensor_data", "model_repository_watch", "predict_image"]}

    @router.get("/v2/models/{name}", tags=["metadata"])
    @router.get("/v2/models/{name}/versions/{version}", tags=["metadata"])
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return server.model(name, version).metadata()

    @router.get("/v2/models/{name}/ready", tags=["health"])
    @router.get("/v2/models/{name}/versions/{version}/ready", tags=["health"])
    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        model = server.model(name, version)
        return {"name": model.name, "version": model.version, "ready": True}

    @router.post(INFER_PATHS[0], tags=["inference"], openapi_extra=INFER_BODY)
    @router.post(INFER_PATHS[1], tags=["inference"], openapi_extra=INFER_BODY)
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        """Described here for /docs; answered by the plain routes of ``_infer_routes``, which match first."""
        return await answer_infer(server, name, request, version)

    @router.post("/v2/models/{name}/predict", tags=["inference"], openapi_extra=IMAGE_BODY)
    @router.post("/v2/models/{name}/versions/{version}/predict", tags=["inference"], openapi_extra=IMAGE_BODY)
    async def predict(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
        from edgeopt.images import decode_image, fit_image
        from edgeopt.runtime.predictor import describe

        arrived = time.perf_counter()
        async with server.observed(name, "predict"):
            model = server.model(name, version)
            body = await server.read_body(request, name)
            with server.admission(name):
                if not body:
                    raise InputError("the body is empty; send the image's bytes (Content-Type: image/jpeg or image/png)")

                def prepare():
                    image = decode_image(body, model.spec.shape[1], "the uploaded image", settings.max_pixels)
                    return fit_image(image, model.spec)

                fitted = await asyncio.to_thread(prepare)
                answer = await server.infer_rows(model, fitted.input, arrived)
                result = await asyncio.to_thread(model.task.results, answer.outputs, [fitted], model.score_threshold)
                record = describe(model.task, result[0], fitted.size, model.labels)
        rung = {} if answer.rung is None else {"rung": answer.rung}
        return {"model_name": model.name, "model_version": model.version, **rung, **record}

    @router.get("/metrics", tags=["metrics"])
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        for name, count in server.admitted.items():
            server.metrics.queue_depth.labels(name).set(count)
        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


async def answer_infer(server: Server, name: str, request: Request, version: str | None) -> Response:
    """One OIP infer request, from its body to the response."""
    arrived = time.perf_counter()  # a ladder's plan counts the time spent reading and parsing too
    async with server.observed(name, "infer"):
        model = server.model(name, version)
        body = await server.read_body(request, name)
        with server.admission(name):
            binary, limit = request.headers.get(HEADER_LENGTH), server.max_json_values(model)
            # binary tensors parse in microseconds: inline; JSON number lists are slow: off the event loop
            if binary is not None and len(body) < INLINE_BYTES:
                parsed, rows = _parse_infer(model, body, binary, limit)
            else:
                parsed, rows = await asyncio.to_thread(_parse_infer, model, body, binary, limit)
            answer = await server.infer_rows(model, rows, arrived)
            if parsed.binary_by_default or parsed.binary_outputs:
                content, header = _encode_infer(model, parsed, answer)
            else:
                content, header = await asyncio.to_thread(_encode_infer, model, parsed, answer)
    if header is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header)})


def _infer_routes(server: Server, check: Callable[[Request], Awaitable[None]]) -> list[Route]:
    """/infer as plain Starlette routes: the hot path skips FastAPI's per-request dependency solving and
    parameter handling (about a quarter of the server's CPU per small request, measured with py-spy), with the
    same bearer check, the same handler and the app's same error handlers."""
    async def endpoint(request: Request) -> Response:
        await check(request)
        return await answer_infer(server, request.path_params["name"], request, request.path_params.get("version"))

    return [Route(path, endpoint, methods=["POST"]) for path in INFER_PATHS]


def _parse_infer(model: ServedModel, body: bytes, header_length: str | None, max_values: int):
    parsed = parse_request(body, header_length, max_values)
    if len(parsed.inputs) != 1:
        raise InputError(f"model {model.name!r} takes 1 input ({model.spec.name!r}), the request sent "
                         f"{len(parsed.inputs)}")
    (name, array), = parsed.inputs.items()
    return parsed, model.check_input(name, array)


def _encode_infer(model: ServedModel, parsed, answer: Answer) -> tuple[bytes, int | None]:
    outputs = answer.outputs
    names = [out.name for out in model.artifact.outputs]
    if len(names) != len(outputs):
        names = [f"output{i}" for i in range(len(outputs))]
    named = list(zip(names, outputs))
    if parsed.outputs is not None:
        unknown = set(parsed.outputs) - set(names)
        if unknown:
            raise InputError(f"model {model.name!r} has no output {sorted(unknown)[0]!r}; its outputs: {', '.join(names)}")
        named = [(n, a) for n, a in named if n in parsed.outputs]
    parameters = None if answer.rung is None else {"rung": answer.rung}
    return encode_response(model.name, model.version, parsed.id, named, parsed, parameters)
