"""A ladder served under one name: any OIP client reaches it, every answer says which rung gave it, load moves
the controller down and quiet brings it back, and nothing but 200 or 503 comes back across the switches."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import numpy as np
import pytest

from edgeopt.backends import open_session
from tests.helpers import RunningServer, edgeopt

pytest.importorskip("fastapi", reason="the serving extra (fastapi, uvicorn) is not installed")


def _rung_answers(metrics: str) -> dict[str, float]:
    return {rung: float(count) for rung, count in
            re.findall(r'edgeopt_ladder_answers_total\{model="lad",rung="(r\d)"\} ([0-9.]+)', metrics)}


HEADER = "Inference-Header-Content-Length"


def _body(seed: int) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor request (parsed in microseconds: a ladder's plan counts the parsing too)."""
    data = np.random.default_rng(seed).standard_normal((1, 3, 64, 64)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": data.nbytes}}]}).encode()
    return header + data.tobytes(), {HEADER: str(len(header))}


def test_tritonclient_infers_on_a_ladder_name_and_the_answer_is_its_rungs(served_ladder):
    import io

    import tritonclient.http as triton
    from PIL import Image

    with RunningServer(f"lad={served_ladder}", "--target-p99-ms", "200") as running:
        client = triton.InferenceServerClient(f"127.0.0.1:{running.port}")
        assert client.is_model_ready("lad")
        metadata = client.get_model_metadata("lad")
        assert [r["name"] for r in metadata["parameters"]["rungs"]] == ["r0", "r1"]
        batch = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        result = client.infer("lad", [tensor])
        rung = result.get_response()["parameters"]["rung"]
        assert rung == "r0"  # no load: the most accurate rung
        expected = open_session(served_ladder / rung).run([batch])[0]
        np.testing.assert_allclose(result.as_numpy(metadata["outputs"][0]["name"]), expected, rtol=1e-5, atol=1e-5)
        client.close()
        buffer = io.BytesIO()
        Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(buffer, format="PNG")
        reply = httpx.post(f"{running.url}/v2/models/lad/predict", content=buffer.getvalue(),
                           headers={"Content-Type": "image/png"})
        assert reply.status_code == 200 and reply.json()["rung"] == "r0", reply.text  # /predict names the rung too


def test_load_steps_down_quiet_steps_back_up_and_every_answer_is_200_or_503(served_ladder):
    record = json.loads((served_ladder / "ladder.json").read_text())
    full_batch_ms = record["rungs"][0]["latency_ms"]["8"]["p50"]
    # a target a few full batches long: 128 requests at once (16 batches) cannot be answered in time by r0 alone
    target = max(10.0, 4 * full_batch_ms)
    with RunningServer(f"lad={served_ladder}", "--target-p99-ms", f"{target:.3f}", "--max-queue", "512",
                       "--max-queue-delay-ms", "0.5") as running:
        url = f"{running.url}/v2/models/lad/infer"
        bodies = [_body(i) for i in range(8)]

        async def burst(count: int) -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
            async with httpx.AsyncClient(limits=limits, timeout=60) as client:
                return await asyncio.gather(*(client.post(url, content=bodies[i % 8][0], headers=bodies[i % 8][1])
                                              for i in range(count)))

        responses = asyncio.run(burst(256))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}, statuses
        rungs = [r.json()["parameters"]["rung"] for r in responses if r.status_code == 200]
        assert "r1" in rungs, "the burst never moved the ladder down"
        for response in responses:
            if response.status_code == 503:
                assert response.headers["retry-after"] and "fastest rung" in response.json()["error"]
        quiet = [httpx.post(url, content=bodies[0][0], headers=bodies[0][1]) for _ in range(30)]
        assert all(r.status_code == 200 for r in quiet), [r.text for r in quiet if r.status_code != 200][:1]
        quiet = [r.json()["parameters"]["rung"] for r in quiet]
        assert quiet[-1] == "r0", quiet  # back on the most accurate rung once the load is gone
        answers = _rung_answers(httpx.get(f"{running.url}/metrics").text)
        assert sum(answers.values()) == statuses.count(200) + 30 and set(answers) == {"r0", "r1"}


def test_a_ladder_without_a_target_is_refused_with_what_to_pass(served_ladder):
    proc = edgeopt("serve", f"lad={served_ladder}", "--port", "0")
    assert proc.returncode == 1 and "--target-p99-ms" in proc.stderr and "Traceback" not in proc.stderr


def test_with_instances_a_model_that_becomes_a_ladder_and_back_answers_across_both_swaps(served_ladder, tmp_path):
    """--instances 2 runs a single model's batches two at a time; a ladder's one at a time: the batcher is replaced
    at each swap and every request on either side is answered."""
    import shutil
    import time

    repository = tmp_path / "models"
    shutil.copytree(served_ladder.parent / "w48", repository / "lad" / "1")
    with RunningServer("--model-repository", str(repository), "--poll-seconds", "0.2", "--instances", "2",
                       "--target-p99-ms", "200") as running:
        url = f"{running.url}/v2/models/lad/infer"

        def swap_to(version: str, source) -> list[dict]:
            shutil.copytree(source, repository / "lad" / version)
            deadline, answers = time.time() + 20, []
            while time.time() < deadline:
                body, headers = _body(len(answers))
                response = httpx.post(url, content=body, headers=headers)
                assert response.status_code == 200, response.text
                answers.append(response.json())  # JSON outputs: the request asked for no binary ones
                if answers[-1]["model_version"] == version:
                    return answers
            raise AssertionError(f"version {version} was not served within 20 s")

        to_ladder = swap_to("2", served_ladder)
        assert "rung" not in (to_ladder[0].get("parameters") or {}) and to_ladder[-1]["parameters"]["rung"] == "r0"
        back = swap_to("3", served_ladder.parent / "w8")
        assert "rung" not in (back[-1].get("parameters") or {})
        log = running.stop()
    assert "Traceback" not in log and "its batches run one at a time" in log, log


def _digits_batch(staged, rows: int) -> np.ndarray:
    from edgeopt.images import to_input
    from edgeopt.tasks import get_task

    test = get_task("classification").load("digits", staged.input_spec).test
    return to_input(test.images[:rows], staged.input_spec)


@pytest.mark.slow  # trains a digits model and its exits (20 s)
def test_an_early_exit_model_is_served_with_its_settings_as_rungs(staged_digits, tmp_path):
    """Accuracy first when there is time, the fastest setting when there is none (the first request: the controller
    has observed nothing yet); each answer is that setting's."""
    from edgeopt.runtime.exits import ExitRunner

    _, staged = staged_digits
    names = [s.name for s in staged.settings]
    batch = _digits_batch(staged, 16)
    body = {"inputs": [{"name": staged.input_spec.name, "shape": list(batch.shape), "datatype": "FP32",
                        "data": batch.ravel().tolist()}]}
    for target, expected in (("60000", names[0]), ("0.001", names[-1])):
        with RunningServer(f"ex={staged.path}", "--target-p99-ms", target) as running:
            metadata = httpx.get(f"{running.url}/v2/models/ex").json()
            assert [r["name"] for r in metadata["parameters"]["rungs"]] == names
            reply = httpx.post(f"{running.url}/v2/models/ex/infer", json=body)
            assert reply.status_code == 200, reply.text
            answer = reply.json()
            assert answer["parameters"]["rung"] == expected
            logits = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(16, -1)
            np.testing.assert_allclose(logits, ExitRunner.load(staged, expected).run([batch])[0], rtol=1e-5, atol=1e-5)
            metrics = httpx.get(f"{running.url}/metrics").text
            assert f'edgeopt_ladder_answers_total{{model="ex",rung="{expected}"}} 1.0' in metrics
    proc = edgeopt("serve", f"ex={staged.path}", "--port", "0")
    assert proc.returncode == 1 and "--target-p99-ms" in proc.stderr and "Traceback" not in proc.stderr
    untimed = tmp_path / "untimed"
    import shutil

    shutil.copytree(staged.path, untimed)
    record = json.loads((untimed / "exits.json").read_text())
    for setting in record["settings"]:
        setting.pop("latency_ms")
    (untimed / "exits.json").write_text(json.dumps(record))
    proc = edgeopt("serve", f"ex={untimed}", "--port", "0", "--target-p99-ms", "50")
    assert proc.returncode == 1 and "build it again with `edgeopt exits`" in proc.stderr, proc.stderr
