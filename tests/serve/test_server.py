"""`edgeopt serve` in its own process: the Open Inference Protocol as Triton's client speaks it, bad input,
overload, hot swaps, tokens and SIGTERM draining."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from edgeopt.backends import open_session
from tests.helpers import RunningServer
from tests.serve.hostile import reply_of, rss_peak, send_head

pytest.importorskip("fastapi", reason="the serving extra (fastapi, uvicorn) is not installed")


@pytest.fixture(scope="module")
def server(served):
    with RunningServer(f"tiny={served['tiny']}", f"det={served['det']}", "--max-body-mb", "1", "--max-pixels", "1000000") as running:
        yield running


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["tiny", "det"])
def test_tritonclient_reads_metadata_and_infers_what_the_session_computes(server, served, name):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_ready() and client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    assert metadata["inputs"][0]["shape"][0] == -1 and metadata["platform"] == "onnxruntime_onnx"
    shape = [3, *metadata["inputs"][0]["shape"][1:]]
    batch = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    expected = open_session(served[name]).run([batch])
    for binary in (True, False):
        tensor = triton.InferInput(metadata["inputs"][0]["name"], shape, "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        asked = [triton.InferRequestedOutput(o["name"], binary_data=binary) for o in metadata["outputs"]]
        result = client.infer(name, [tensor], outputs=asked, request_id="r1")
        assert result.get_response()["id"] == "r1"
        for output, want in zip(metadata["outputs"], expected):
            np.testing.assert_allclose(result.as_numpy(output["name"]), want, rtol=1e-5, atol=1e-5)
    client.close()


def test_predict_takes_an_image_and_answers_like_edgeopt_predict(server, served, tmp_path):
    from edgeopt.runtime.predictor import Predictor

    pixels = np.random.default_rng(2).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    (tmp_path / "x.png").write_bytes(_png(pixels))
    for name in ("tiny", "det"):
        answer = httpx.post(f"{server.url}/v2/models/{name}/predict", content=_png(pixels),
                            headers={"content-type": "image/png"}).json()
        local = Predictor(served[name]).predict(tmp_path / "x.png")
        assert answer["model_name"] == name and (answer["width"], answer["height"]) == (120, 90)
        if name == "tiny":  # an untrained zoo model records no task: its outputs as they are
            np.testing.assert_allclose(answer["outputs"], local["outputs"], atol=1e-4)
        else:
            assert answer["labels"] == local["labels"]
            np.testing.assert_allclose(answer["boxes"], local["boxes"], atol=0.05)


BAD_REQUESTS = [
    ("not json", b"{inputs", {}, 400, "not valid JSON"),
    ("no inputs", b'{"outputs": []}', {}, 400, '"inputs"'),
    ("wrong shape", json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                            "data": [0.0] * 192}]}).encode(), {}, 400, "expects Nx3x32x32"),
    ("too few values", json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                               "data": [1, 2]}]}).encode(), {}, 400, "do not fill"),
    ("strings", json.dumps({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32",
                                        "data": ["a"]}]}).encode(), {}, 400, "not all FP32"),
    ("wrong input name", json.dumps({"inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                                 "data": [0.0] * 3072}]}).encode(), {}, 400, "'input'"),
    ("unknown datatype", json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "FP8",
                                                 "data": [0]}]}).encode(), {}, 400, "datatype"),
    ("giant shape", json.dumps({"inputs": [{"name": "input", "shape": [100000, 100000, 100], "datatype": "FP32",
                                            "data": []}]}).encode(), {}, 400, "over the"),
    ("binary short", json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                             "parameters": {"binary_data_size": 12288}}]}).encode() + b"\0" * 100,
     {"inference-header-content-length": "0"}, 400, "Inference-Header-Content-Length"),
    ("too large", b"x" * (2 << 20), {}, 413, "limit"),
    ("nested 3,000 deep", b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": '
     + b"[" * 3000 + b"0" + b"]" * 3000 + b"}]}", {}, 400, "levels deep"),
    ("more values than 8 samples", json.dumps({"inputs": [{"name": "input", "shape": [9, 3, 32, 32], "datatype": "FP32",
                                                           "data": [[0]] * 9 * 3072}]}).encode(), {}, 413, "binary"),
]


@pytest.mark.parametrize("what, body, headers, status, phrase", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_a_malformed_infer_request_gets_one_clear_refusal(server, what, body, headers, status, phrase):
    response = httpx.post(f"{server.url}/v2/models/tiny/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]


def test_nan_input_wrong_model_and_bad_images_are_refused_and_the_server_lives_on(server):
    nan = np.zeros((1, 3, 32, 32), np.float32)
    nan[0, 0, 0, 0] = np.nan
    body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": nan.ravel().tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/tiny/infer", content=json.dumps(body))
    assert response.status_code == 400 and "NaN" in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/nope").status_code == 404
    assert "no model named 'nope'" in httpx.post(f"{server.url}/v2/models/nope/infer", content=b"{}").json()["error"]
    assert httpx.get(f"{server.url}/v2/models/tiny/versions/7").status_code == 404
    for image, phrase in [(b"GIF89a not really", "JPEG"), (b"", "empty"),
                          (_png(np.zeros((1200, 1000, 3), np.uint8)), "pixel limit"),
                          (_png(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))[:2000], "damaged")]:
        response = httpx.post(f"{server.url}/v2/models/det/predict", content=image)
        assert response.status_code in (400, 413) and phrase in response.json()["error"], response.text
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert "/v2/models/{name}/infer" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'edgeopt_requests_total{endpoint="infer",model="tiny",status="400"}' in metrics
    assert "process_resident_memory_bytes" in metrics and "edgeopt_model_load_seconds" in metrics


def test_unknown_model_names_add_no_metric_series(server):
    def scrape() -> tuple[str, set[str], float]:
        text = httpx.get(f"{server.url}/metrics").text
        series = {line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")}
        unknown = re.search(r'edgeopt_requests_total\{endpoint="infer",model="\(unknown\)",status="404"\} (\S+)', text)
        return text, series, float(unknown.group(1))

    before, series_before, count_before = scrape()
    with httpx.Client() as client:  # one connection for the 200 requests: a new one each cost the test seconds
        for i in range(200):
            answer = client.post(f"{server.url}/v2/models/nobody-{i}/{'infer' if i % 2 else 'predict'}", content=b"{}")
            assert answer.status_code == 404
    after, series_after, count_after = scrape()
    assert series_after == series_before and count_after == count_before + 100
    assert abs(len(after) - len(before)) < 300, (len(before), len(after))  # only the counts' digits change


def test_slow_bodies_hold_no_place_in_the_queue_and_the_deadline_closes_them(served):
    # --max-queue 64 slow senders: before, they held every place and a normal request got 503 while they stayed
    with RunningServer(f"tiny={served['tiny']}", "--max-queue", "64", "--body-timeout", "2") as running:
        opened = time.perf_counter()
        slow = [send_head(running.url, "/v2/models/tiny/infer", {"Content-Length": "100000"}, b'{"inputs": [')
                for _ in range(64)]
        time.sleep(0.3)  # every one of them is being read
        started = time.perf_counter()
        answer = httpx.post(f"{running.url}/v2/models/tiny/infer", content=_infer_body(), timeout=5)
        assert answer.status_code == 200 and time.perf_counter() - started < 1.0
        replies = [reply_of(sock, opened + 2 + 2 - time.perf_counter()) for sock in slow]
        assert replies == [(408, True)] * 64 and time.perf_counter() - opened < 2 + 2, replies
        metrics = httpx.get(f"{running.url}/metrics").text
        assert 'edgeopt_requests_total{endpoint="infer",model="tiny",status="408"} 64.0' in metrics


def test_a_32_mb_body_of_nested_json_lists_is_refused_before_it_costs_memory(served):
    rows = (32 << 20) // 4 - 64  # "[0]," per row: the body stays under the default --max-body-mb 32
    body = (b'{"inputs": [{"name": "input", "shape": [%d, 1], "datatype": "FP32", "data": [' % rows
            + b"[0]," * (rows - 1) + b"[0]]}]}")
    with RunningServer(f"tiny={served['tiny']}") as running:
        with rss_peak(running.proc.pid) as rss:
            answer = httpx.post(f"{running.url}/v2/models/tiny/infer", content=body, timeout=60)
        assert answer.status_code == 413 and "values" in answer.json()["error"], answer.text
        assert rss["peak"] - rss["before"] <= 200, rss  # it was 1.1 GB when the lists were built
        assert httpx.post(f"{running.url}/v2/models/tiny/infer", content=_infer_body()).status_code == 200


async def _burst(url: str, body: bytes, count: int, headers: dict | None = None) -> list[int]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*(client.post(url, content=body, headers=headers) for _ in range(count)))
    return [r.status_code for r in responses]


def _infer_body(batch: int = 1) -> bytes:
    data = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    return json.dumps({"inputs": [{"name": "input", "shape": list(data.shape), "datatype": "FP32",
                                   "data": data.ravel().tolist()}]}).encode()


def test_overload_answers_503_with_retry_after_never_500(served):
    # a queue of 2 and no batching: a burst of 64 must overflow it; every answer is 200 or 503
    with RunningServer(str(served["det"]), "--max-queue", "2", "--max-batch", "1") as running:
        body, headers = _detector_body()
        statuses = asyncio.run(_burst(f"{running.url}/v2/models/det/infer", body, 64, headers))
        assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and statuses.count(200) >= 2, statuses
        refused = httpx.post(f"{running.url}/v2/models/det/infer", content=body, headers=headers)
        assert refused.status_code == 200  # the burst is over: served again
        metrics = httpx.get(f"{running.url}/metrics").text
        assert f'edgeopt_requests_total{{endpoint="infer",model="det",status="503"}} {statuses.count(503)}.0' in metrics


def _detector_body(batch: int = 1) -> tuple[bytes, dict[str, str]]:
    """A batch for "det" with the binary tensor extension (a JSON body holds at most --max-batch samples)."""
    from edgeopt.serve.protocol import HEADER_LENGTH

    data = np.random.default_rng(0).standard_normal((batch, 3, 64, 64)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": list(data.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": data.nbytes}}]}).encode()
    return header + data.tobytes(), {HEADER_LENGTH: str(len(header))}


def test_a_token_is_required_when_set_and_health_stays_open(served):
    with RunningServer(f"tiny={served['tiny']}", "--token-env", "EDGEOPT_TEST_TOKEN",
                       env={"EDGEOPT_TEST_TOKEN": "s3cret"}) as running:
        assert httpx.get(f"{running.url}/v2/models/tiny").status_code == 401
        assert httpx.get(f"{running.url}/v2/models/tiny", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{running.url}/v2/models/tiny", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 200
        # /infer runs on its own plain routes (the hot path): the same check guards both of its paths
        body, headers = _infer_body(), {}
        for path in ("/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer"):
            assert httpx.post(running.url + path, content=body, headers=headers).status_code == 401
            assert httpx.post(running.url + path, content=body,
                              headers={**headers, "authorization": "Bearer wrong"}).status_code == 401
            assert httpx.post(running.url + path, content=body,
                              headers={**headers, "authorization": "Bearer s3cret"}).status_code == 200
        assert "/v2/models/{name}/infer" in httpx.get(f"{running.url}/openapi.json").json()["paths"]


def test_a_new_version_swaps_in_under_load_with_no_failed_request_and_a_tampered_one_is_refused(served, tmp_path):
    repository = tmp_path / "models"
    shutil.copytree(served["tiny"], repository / "tiny" / "1")
    with RunningServer("--model-repository", str(repository), "--poll-seconds", "0.2") as running:
        url = f"{running.url}/v2/models/tiny/infer"

        async def load_while(swap) -> tuple[list[int], set[str]]:
            statuses, versions = [], set()
            async with httpx.AsyncClient(timeout=30) as client:
                async def user():
                    while not done.is_set():
                        response = await client.post(url, content=_infer_body())
                        statuses.append(response.status_code)
                        if response.status_code == 200:
                            versions.add(response.json()["model_version"])
                done = asyncio.Event()
                users = [asyncio.create_task(user()) for _ in range(8)]
                while not statuses:  # under a busy CPU the first answers take a while: swap only once served
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(swap)
                await asyncio.sleep(0.5)
                done.set()
                await asyncio.gather(*users)
            return statuses, versions

        def swap_to_version_2():
            shutil.copytree(served["tiny"], repository / "tiny" / "2")
            deadline = time.time() + 20
            while httpx.get(f"{running.url}/v2/models/tiny").json()["versions"] != ["2"] and time.time() < deadline:
                time.sleep(0.05)

        statuses, versions = asyncio.run(load_while(swap_to_version_2))
        assert statuses and set(statuses) == {200} and versions == {"1", "2"}, (set(statuses), versions)

        tampered = repository / "tiny" / "3"
        shutil.copytree(served["tiny"], tampered)
        with open(tampered / "model.onnx", "r+b") as handle:
            handle.seek(100)
            handle.write(b"\x13\x37")

        def wait_for_refusal():
            deadline = time.time() + 20
            while "edgeopt_model_versions_refused_total{model=\"tiny\"} 1.0" not in httpx.get(
                    f"{running.url}/metrics").text and time.time() < deadline:
                time.sleep(0.05)

        statuses, versions = asyncio.run(load_while(wait_for_refusal))
        assert set(statuses) == {200} and versions == {"2"}
        assert httpx.get(f"{running.url}/v2/models/tiny").json()["versions"] == ["2"]
        log = running.stop()
    assert "refused tiny version 3" in log and "still serving version 2" in log, log


def test_bundle_versions_in_a_repository_swap_in_leave_one_unpacked_copy_and_a_truncated_one_is_refused(
        served, tmp_path):
    from edgeopt.core.bundle import pack

    repository, scratch_parent = tmp_path / "models", tmp_path / "tmp"
    (repository / "tiny").mkdir(parents=True)
    scratch_parent.mkdir()
    bundle = pack(served["tiny"])

    def place(version: str, data: bytes) -> None:  # written beside it, then renamed: it appears whole
        partial = repository / "tiny" / f".{version}.partial"
        partial.write_bytes(data)
        partial.rename(repository / "tiny" / f"{version}.edgeopt")

    def unpacked() -> list[str]:
        return sorted(entry.name for scratch in scratch_parent.glob("edgeopt-serve-*") for entry in scratch.iterdir())

    place("1", bundle)
    with RunningServer("--model-repository", str(repository), "--poll-seconds", "0.2",
                       env={"TMPDIR": str(scratch_parent)}) as running:
        assert httpx.get(f"{running.url}/v2/models/tiny").json()["versions"] == ["1"]
        place("2", bundle)
        deadline = time.time() + 20
        while httpx.get(f"{running.url}/v2/models/tiny").json()["versions"] != ["2"] and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.post(f"{running.url}/v2/models/tiny/infer", content=_infer_body()).status_code == 200
        assert [name.split("-")[1] for name in unpacked()] == ["2"], unpacked()  # version 1's copy is gone

        place("3", bundle[: len(bundle) // 2])
        deadline = time.time() + 20
        while "edgeopt_model_versions_refused_total{model=\"tiny\"} 1.0" not in httpx.get(
                f"{running.url}/metrics").text and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{running.url}/v2/models/tiny").json()["versions"] == ["2"]
        assert [name.split("-")[1] for name in unpacked()] == ["2"], unpacked()  # the refused one left nothing
        log = running.stop()
    assert "refused tiny version 3" in log, log
    assert list(scratch_parent.glob("edgeopt-serve-*")) == [], "the scratch folder outlived the server"


def test_sigterm_lets_in_flight_requests_finish(served):
    running = RunningServer(str(served["det"]), "--max-batch", "1")
    body, headers = _detector_body(48)

    async def burst_then_term() -> tuple[int, list[int]]:
        async with httpx.AsyncClient(timeout=30) as client:
            requests = [asyncio.create_task(client.post(f"{running.url}/v2/models/det/infer", content=body,
                                                        headers=headers)) for _ in range(24)]
            # the first answer means every request is in: one batch runs at a time, so most still wait
            await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
            running.proc.terminate()
            in_flight = sum(not request.done() for request in requests)
            return in_flight, [r.status_code for r in await asyncio.gather(*requests, return_exceptions=True)
                               if isinstance(r, httpx.Response)]

    in_flight, statuses = asyncio.run(burst_then_term())
    log = running.stop()
    assert in_flight >= 12, in_flight  # SIGTERM came while they ran
    assert statuses == [200] * 24, statuses
    assert running.proc.returncode in (0, -15) and "Traceback" not in log, log  # uvicorn re-raises the signal it drained for


def test_a_fixed_batch_artifact_is_served_one_sample_at_a_time_correctly(tmp_path):
    from edgeopt.compile import export
    from edgeopt.models.sources import load_model
    from edgeopt.core.spec import InputSpec

    model = load_model("edgeopt.models.zoo:tiny_cnn", input=InputSpec((1, 3, 32, 32), dynamic_batch=False))
    artifact = export(model, "onnxruntime", tmp_path / "fixed")
    batch = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    session = open_session(artifact.path)
    expected = np.concatenate([session.run([row[None]])[0] for row in batch])
    with RunningServer(str(artifact.path)) as running:
        body = {"inputs": [{"name": "input", "shape": [3, 3, 32, 32], "datatype": "FP32", "data": batch.ravel().tolist()}]}
        answer = httpx.post(f"{running.url}/v2/models/fixed/infer", content=json.dumps(body)).json()
        np.testing.assert_allclose(np.asarray(answer["outputs"][0]["data"]).reshape(3, -1), expected, atol=1e-5)
        statuses = asyncio.run(_burst(f"{running.url}/v2/models/fixed/infer", _infer_body(), 16))
        assert set(statuses) == {200}


def test_an_openvino_artifact_is_served_like_an_onnx_runtime_one(artifact_cache):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    artifact = artifact_cache("openvino")
    batch = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = open_session(artifact.path).run([batch])[0]
    with RunningServer(f"tiny-ov={artifact.path}") as running:
        metadata = httpx.get(f"{running.url}/v2/models/tiny-ov").json()
        assert metadata["platform"] == "openvino"
        body = {"inputs": [{"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32", "data": batch.ravel().tolist()}]}
        answer = httpx.post(f"{running.url}/v2/models/tiny-ov/infer", content=json.dumps(body)).json()
        np.testing.assert_allclose(np.asarray(answer["outputs"][0]["data"]).reshape(2, -1), expected, atol=1e-4)


def test_a_request_waiting_past_its_timeout_is_answered_504(served):
    with RunningServer(str(served["det"]), "--max-batch", "1", "--request-timeout", "0.002") as running:
        body, headers = _detector_body(16)
        statuses = asyncio.run(_burst(f"{running.url}/v2/models/det/infer", body, 24, headers))
        assert set(statuses) <= {200, 504} and 504 in statuses, statuses
        refused = httpx.post(f"{running.url}/v2/models/det/infer", content=body, headers=headers)
        assert refused.status_code in (200, 504) and ("error" not in refused.json() or "within" in refused.json()["error"])


def test_a_bundle_is_served_like_its_artifact_and_a_tampered_one_is_refused(served, tmp_path):
    import tarfile

    from edgeopt.core.bundle import pack
    from tests.helpers import tar_of

    bundle = tmp_path / "tiny.edgeopt"
    bundle.write_bytes(pack(served["tiny"]))
    with RunningServer(str(bundle)) as running:
        body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                            "data": np.zeros(3 * 32 * 32).tolist()}]}
        answer = httpx.post(f"{running.url}/v2/models/tiny/infer", json=body)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 10]
    with tarfile.open(fileobj=io.BytesIO(bundle.read_bytes())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members["model.onnx"] = members["model.onnx"][:-10] + b"\0" * 10
    bundle.write_bytes(tar_of(members))
    proc = subprocess.run([sys.executable, "-m", "edgeopt", "serve", str(bundle), "--port", "1"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "does not match the sha256" in proc.stderr and "Traceback" not in proc.stderr
