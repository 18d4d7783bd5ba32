"""Fuzzing the two HTTP services from their own OpenAPI schemas (schemathesis + hypothesis): whatever
a client sends — malformed, oversized, wrongly typed, unauthenticated — the answer is a clear 4xx
(or a success), never a 500, and the service keeps answering. Each service gets at least 1,000
generated requests, counted here."""

from __future__ import annotations

import collections

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.helpers import AGENT_TOKEN, RunningServer, running_agent

pytestmark = pytest.mark.slow
MIN_REQUESTS = 1000
SERVER_TOKEN = "fuzz-server-token-42"
SENT: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=True)


@schemathesis.serializer("application/x-tar")
def tar_body(ctx, value) -> bytes:
    """The agent's bundle body: whatever bytes were generated (a real bundle is never what a fuzzer makes)."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def server(served):
    with RunningServer(f"tiny={served['tiny']}", f"det={served['det']}", "--token-env", "FUZZ_TOKEN",
                       "--max-body-mb", "2", env={"FUZZ_TOKEN": SERVER_TOKEN}) as running:
        yield running
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 200  # still serving after it all
    assert SENT["server"] >= MIN_REQUESTS, SENT


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    with running_agent(tmp_path_factory.mktemp("fuzz-agent"), "--max-upload-mb", "2") as running:
        yield running
        assert httpx.get(f"{running.url}/v1/health").json()["status"] == "ok"
    assert SENT["agent"] >= MIN_REQUESTS, SENT


def fuzz(url: str, token: str, who: str, examples: int) -> None:
    """Every operation of the service's OpenAPI schema, ``examples`` generated cases each (hypothesis, fixed seed)."""
    from hypothesis import given

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(FUZZ, max_examples=examples)
        def send(case) -> None:
            call(case, token, who)

        send()


def call(case, token: str, who: str):
    """Send the case (every seventh without the token, to fuzz the refusal path too) and count it."""
    SENT[who] += 1
    if SENT[who] % 7:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call(timeout=60)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis keeps every value of a header
    if response.status_code >= 400 and content_type.startswith("application/json"):
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body  # one sentence, not a traceback
    return response


def test_the_server_answers_generated_requests_without_a_500(server):
    fuzz(server.url, SERVER_TOKEN, "server", examples=150)


def test_the_agent_answers_generated_requests_without_a_500(agent):
    fuzz(agent.url, AGENT_TOKEN, "agent", examples=1000)  # two of its three operations take no input
