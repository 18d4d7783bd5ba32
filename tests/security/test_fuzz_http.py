"""Fuzzing the two HTTP services from their own OpenAPI schemas (schemathesis + hypothesis): whatever
a client sends — malformed, oversized, wrongly typed, unauthenticated — the answer is a clear 4xx
(or a success), never a 500, and the service keeps answering. Each service gets at least 1,000
generated requests, counted here. Of the generated bodies, a third are sent nested thousands of levels
deep (the server: around the tensor data; the agent: as the bundle's manifest) and a third cut short
(the generated body, or a real request or bundle); then each operation with a body is sent one that
stops arriving, which the body deadline answers 408."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from typing import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from edgeopt.core.bundle import pack
from tests.helpers import AGENT_TOKEN, RunningServer, running_agent, tar_of
from tests.serve.hostile import reply_of, send_head

pytestmark = pytest.mark.slow
MIN_REQUESTS = 1000
SERVER_TOKEN = "fuzz-server-token-42"
SENT: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=True)
BODY_TIMEOUT = 1  # seconds: both services are started with it, so a stalled body is answered quickly
# None: the generated body as it is; ("deep", levels); ("cut", fraction) or ("cut a real one", fraction)
HOSTILE = st.one_of(st.none(), st.tuples(st.just("deep"), st.integers(1_000, 50_000)),
                    st.tuples(st.sampled_from(["cut", "cut a real one"]), st.floats(0, 1, exclude_max=True)))


@dataclass(frozen=True)
class Hostility:
    """How a service's bodies are made hostile: ``deep`` nests a body ``levels`` deep; ``real`` is a body the
    service accepts, to cut short (before its trailing zeros: a tar's end padding is optional)."""

    deep: Callable[[bytes, int], bytes]
    real: bytes
    stalled: tuple[str, ...]  # paths that take a body, for the bodies that stop arriving

    def apply(self, body: bytes, hostile: tuple[str, float]) -> bytes:
        kind, amount = hostile
        if kind == "deep":
            return self.deep(body, int(amount))
        source = body if kind == "cut" else self.real
        return source[: int(len(source.rstrip(b"\0")) * amount)]


@schemathesis.serializer("application/x-tar")
def tar_body(ctx, value) -> bytes:
    """The agent's bundle body: whatever bytes were generated (a real bundle is never what a fuzzer makes)."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def server(served):
    with RunningServer(f"tiny={served['tiny']}", f"det={served['det']}", "--token-env", "FUZZ_TOKEN",
                       "--max-body-mb", "2", "--body-timeout", str(BODY_TIMEOUT),
                       env={"FUZZ_TOKEN": SERVER_TOKEN}) as running:
        running.hostility = Hostility(
            deep=lambda body, levels: (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": '
                                       + b"[" * levels + body + b"]" * levels + b"}]}"),
            real=json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                         "data": [0.5] * 3072}]}).encode(),
            stalled=("/v2/models/tiny/infer", "/v2/models/det/predict"))
        yield running
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 200  # still serving after it all
    assert SENT["server"] >= MIN_REQUESTS, SENT


@pytest.fixture(scope="module")
def agent(tmp_path_factory, artifact_cache):
    artifact = artifact_cache("onnxruntime").path
    model = (artifact / "model.onnx").read_bytes()
    with running_agent(tmp_path_factory.mktemp("fuzz-agent"), "--max-upload-mb", "2",
                       "--body-timeout", str(BODY_TIMEOUT)) as running:
        running.hostility = Hostility(
            deep=lambda body, levels: tar_of({"manifest.json": b"[" * levels + body + b"]" * levels,
                                              "model.onnx": model}),
            real=pack(artifact), stalled=("/v1/measure",))
        yield running
        assert httpx.get(f"{running.url}/v1/health").json()["status"] == "ok"
    assert SENT["agent"] >= MIN_REQUESTS, SENT


def fuzz(service: RunningServer, token: str, who: str, examples: int) -> None:
    """Every operation of the service's OpenAPI schema, ``examples`` generated cases each (hypothesis, fixed
    seed), a third of the bodies nested deep and a third cut short; then a stalled body on each path that takes one."""
    from hypothesis import given

    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(), hostile=HOSTILE)
        @settings(FUZZ, max_examples=examples)
        def send(case, hostile) -> None:
            call(case, token, who, service.hostility if case.method == "POST" and hostile else None, hostile)

        send()
    assert min(SENT[f"{who}: {kind}"] for kind in ("deep", "cut", "cut a real one")) >= 50, SENT
    for path in service.hostility.stalled:  # a body that stops arriving: 408 at the deadline, the connection closed
        SENT[who] += 1
        sock = send_head(service.url, path, {"Authorization": f"Bearer {token}", "Content-Length": "1000"}, b"{")
        assert reply_of(sock, BODY_TIMEOUT + 3) == (408, True), path


def call(case, token: str, who: str, hostility: Hostility | None = None, hostile=None):
    """Send the case (every seventh without the token, to fuzz the refusal path too), made hostile when
    ``hostility`` is given, and count it."""
    SENT[who] += 1
    if SENT[who] % 7:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    replaced = {}
    if hostility is not None:
        replaced = {"data": hostility.apply(generated_body(case), hostile)}  # sent instead of the generated body
        SENT[f"{who}: {hostile[0]}"] += 1
    response = case.call(timeout=60, **replaced)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis keeps every value of a header
    if response.status_code >= 400 and content_type.startswith("application/json"):
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body  # one sentence, not a traceback
    return response


def generated_body(case) -> bytes:
    """The body schemathesis would send for ``case``, as bytes."""
    sent = case.as_transport_kwargs()
    if "data" in sent:
        return sent["data"] if isinstance(sent["data"], bytes) else str(sent["data"]).encode()
    return json.dumps(sent.get("json")).encode()


def test_the_server_answers_generated_requests_without_a_500(server):
    fuzz(server, SERVER_TOKEN, "server", examples=150)


def test_the_agent_answers_generated_requests_without_a_500(agent):
    fuzz(agent, AGENT_TOKEN, "agent", examples=1000)  # two of its three operations take no input
