"""The device agent: it measures what a host sends, refuses what it must not run, and never lets a
refused file reach its store or anything outside it."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import pickle
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeopt.agent.client import AgentClient
from edgeopt.agent.remote import measure_on_device
from edgeopt.core.bundle import pack
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.process import MeasureConfig
from tests.helpers import AGENT_TOKEN, CreatesAFile, edgeopt, running_agent, tar_of
from tests.serve.hostile import reply_of, rss_peak, send_head

QUICK = MeasureConfig(batches=(1, 4), timing=TimingConfig(warmup=2, min_iters=20, min_seconds=0.2))
AUTH = {"Authorization": f"Bearer {AGENT_TOKEN}"}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    store = tmp_path_factory.mktemp("agent-store")
    with running_agent(store, "--max-upload-mb", "2", "--memory-cap-mb", "2000", "--name", "test-box") as running:
        running.store = store
        yield running


def manifest_for(artifact: Path, files: dict[str, bytes]) -> bytes:
    """The artifact's own manifest, listing ``files`` with their true sha256."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                         for name, data in files.items()}
    return json.dumps(manifest).encode()


def post(agent, body: bytes, headers=AUTH) -> httpx.Response:
    return httpx.post(f"{agent.url}/v1/measure", content=body, headers=headers, timeout=120)


def test_the_agent_measures_an_artifact_and_its_outputs_match_this_machine(agent, artifact_cache):
    artifact = artifact_cache("onnxruntime").path
    result = measure_on_device(AgentClient(agent.url, AGENT_TOKEN), artifact, QUICK)
    timing = result["timing"]
    assert result["device"]["name"] == "test-box" and "onnxruntime" in result["device"]["backends"]
    assert result["parity"]["passed"] is True and result["parity"]["max_abs_diff"] <= 1e-5
    assert timing["load_ms"] > 0 and timing["first_ms"] > 0 and timing["torch_imported"] is False
    assert timing["batches"]["1"]["p50"] <= timing["batches"]["1"]["p99"]
    assert {"1", "4"} <= set(timing["batches"]) and timing["batches"]["4"]["peak_rss_mb"] > 10
    assert list(agent.store.iterdir()) == []  # cleaned up


def test_the_agent_refuses_without_its_token(agent, artifact_cache):
    body = pack(artifact_cache("onnxruntime").path)
    for headers in ({}, {"Authorization": "Bearer wrong-token-9999"}, {"Authorization": AGENT_TOKEN}):
        answer = post(agent, body, headers)
        assert answer.status_code == 401 and "token" in answer.json()["error"]
    assert httpx.get(f"{agent.url}/v1/device").status_code == 401
    assert httpx.get(f"{agent.url}/v1/device", headers=AUTH).json()["name"] == "test-box"


def test_refused_uploads_never_reach_the_store_or_run(agent, artifact_cache, tmp_path):
    ort = artifact_cache("onnxruntime").path
    model = (ort / "model.onnx").read_bytes()
    sentinel = tmp_path / "created-by-the-pickle"
    payload = pickle.dumps(CreatesAFile(sentinel), protocol=4)
    tampered = bytearray(model)
    tampered[len(tampered) // 2] ^= 0xFF
    no_bytes = json.loads(manifest_for(ort, {"model.onnx": model}))
    del no_bytes["files"]["model.onnx"]["bytes"]
    probe = io.BytesIO()  # a .npy header declaring 53 PiB of FP32, then one sample's bytes
    np.lib.format.write_array_header_1_0(probe, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (4_850_000_000_000, 3, 32, 32)})
    huge_probe = probe.getvalue() + bytes(3 * 32 * 32 * 4)
    cases = {
        "a pickle": (tar_of({"manifest.json": manifest_for(ort, {"model.onnx": payload}), "model.onnx": payload}),
                     400, "pickle"),
        "TorchScript": (pack(artifact_cache("torchscript").path), 400, "zip archive"),
        "a tampered file": (tar_of({"manifest.json": manifest_for(ort, {"model.onnx": model}),
                                    "model.onnx": bytes(tampered)}), 400, "sha256"),
        "a manifest naming ..": (tar_of({"manifest.json": manifest_for(ort, {"../model.onnx": model}),
                                         "model.onnx": model}), 400, "outside its artifact folder"),
        "a member named ..": (tar_of({"manifest.json": manifest_for(ort, {"model.onnx": model}),
                                      "../escaped.onnx": model}), 400, "not a plain file name"),
        "an absolute member": (tar_of({"manifest.json": manifest_for(ort, {"model.onnx": model}),
                                       str(tmp_path / "absolute.onnx"): model}), 400, "not a plain file name"),
        "a symlink": (tar_of({"manifest.json": manifest_for(ort, {"model.onnx": model})},
                             links={"model.onnx": "/etc/passwd"}), 400, "link"),
        "an oversized body": (b"\0" * (3 << 20), 413, "over the 2.0 MB limit (--max-upload-mb)"),
        "not a tar": (b"hello, agent", 400, "not an uncompressed tar"),
        "a truncated bundle": (pack(ort)[: len(model) // 2], 400, "truncated"),
        "a manifest nested 5,000 deep": (tar_of({"manifest.json": b"[" * 5000 + b"]" * 5000, "model.onnx": model}),
                                         400, "nests deeper"),
        "a file record without bytes": (tar_of({"manifest.json": json.dumps(no_bytes).encode(), "model.onnx": model}),
                                        400, '"bytes"'),
        "a probe header claiming 53 PiB": (tar_of({"manifest.json": manifest_for(ort, {"model.onnx": model}),
                                                   "model.onnx": model, "probe.npy": huge_probe}),
                                           400, "header declares"),
    }
    refused_before = httpx.get(f"{agent.url}/v1/health").json()["refused"]
    for what, (body, status, phrase) in cases.items():
        answer = post(agent, body)
        assert answer.status_code == status, (what, answer.text)
        assert phrase in answer.json()["error"], (what, answer.json())
        assert list(agent.store.iterdir()) == [], what
    assert not sentinel.exists()
    assert not (agent.store.parent / "escaped.onnx").exists() and not (tmp_path / "absolute.onnx").exists()
    health = httpx.get(f"{agent.url}/v1/health").json()
    assert health["refused"] == refused_before + len(cases)


def test_a_busy_agent_and_a_missing_token_answer_before_reading_an_upload(tmp_path, artifact_cache):
    hundred_mb = str(100 << 20)
    with running_agent(tmp_path / "store") as device:  # the default --max-upload-mb 256 takes 100 MB
        untokened = send_head(device.url, "/v1/measure", {"Content-Length": hundred_mb, "Connection": "close"})
        assert reply_of(untokened, 5) == (401, True)  # on the headers alone: not one byte of the body was sent
        first = concurrent.futures.ThreadPoolExecutor(1).submit(
            httpx.post, f"{device.url}/v1/measure?min_seconds=8", content=pack(artifact_cache("onnxruntime").path),
            headers=AUTH, timeout=120)
        deadline = time.time() + 30
        while not httpx.get(f"{device.url}/v1/health").json()["busy"] and time.time() < deadline:
            time.sleep(0.05)
        busy = send_head(device.url, "/v1/measure", {**AUTH, "Content-Length": hundred_mb, "Connection": "close"})
        assert reply_of(busy, 5) == (503, True)
        with rss_peak(device.proc.pid) as rss:  # and sent whole, the 100 MB are thrown away as they arrive
            answer = httpx.post(f"{device.url}/v1/measure", content=bytes(100 << 20), headers=AUTH, timeout=60)
        assert answer.status_code == 503 and answer.headers["retry-after"] and "measuring another" in answer.text
        assert rss["peak"] - rss["before"] < 30, rss
        assert first.result().status_code == 200, first.result().text


def test_bad_measure_parameters_get_one_clear_400(agent, artifact_cache):
    body = pack(artifact_cache("onnxruntime").path)
    for query, phrase in (("batches=0", "batches"), ("batches=a,b", "batches"), ("threads=0", "threads"),
                          ("sustained_s=-1", "sustained_s"), ("min_seconds=nan", "min_seconds")):
        answer = httpx.post(f"{agent.url}/v1/measure?{query}", content=body, headers=AUTH)
        assert answer.status_code == 400 and phrase in answer.json()["error"], (query, answer.text)
    probe = io.BytesIO()
    np.save(probe, np.zeros((2, 5), np.float32))
    members = {"manifest.json": (artifact_cache("onnxruntime").path / "manifest.json").read_bytes(),
               "model.onnx": (artifact_cache("onnxruntime").path / "model.onnx").read_bytes(), "probe.npy": probe.getvalue()}
    answer = post(agent, tar_of(members))
    assert answer.status_code == 400 and "probe.npy has shape (2, 5)" in answer.json()["error"]


def test_a_model_over_the_memory_cap_is_stopped_and_refused(tmp_path, artifact_cache):
    with running_agent(tmp_path / "store", "--memory-cap-mb", "25") as small:
        answer = post(small, pack(artifact_cache("onnxruntime").path))
    assert answer.status_code == 422
    assert "needs more than the 25 MB of memory this device allows" in answer.json()["error"]


def test_bench_on_an_agent_names_the_device_and_checks_parity(agent, artifact_cache):
    proc = edgeopt("bench", str(artifact_cache("openvino").path), "--agent", agent.url, "--batch", "1,2",
                   "--seconds", "0.2", "--sustained", "2", env={"EDGEOPT_AGENT_TOKEN": AGENT_TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert "measured on test-box" in proc.stdout and "matches this machine" in proc.stdout
    assert "batch 2: p50" in proc.stdout and "drift" in proc.stdout and "temperature:" in proc.stdout


@pytest.mark.slow
def test_the_emulated_device_runs_torch_free_on_one_core(lean_python, tmp_path, served):
    """The agent as a small device: the lean venv (no torch), pinned to one core, a memory cap."""
    with running_agent(tmp_path / "store", "--memory-cap-mb", "400", "--kind", "emulated-1core", python=lean_python,
                       prefix=("taskset", "-c", "0")) as device:
        client = AgentClient(device.url, AGENT_TOKEN)
        identity = client.identity()
        result = measure_on_device(client, served["det"], QUICK)
    assert identity["usable_cpus"] == 1 and identity["backends"] == ["onnxruntime"]
    assert identity["kind"] == "emulated-1core" and "torch" not in identity["versions"]
    assert result["threads"] == 1 and result["timing"]["torch_imported"] is False
    assert result["parity"]["passed"] is True
