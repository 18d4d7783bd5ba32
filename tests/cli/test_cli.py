"""The command line as a user meets it: real processes, real exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from edgeopt.backends import get_backend
from tests.helpers import assert_one_line_error, edgeopt

TINY = ["edgeopt.models.zoo:tiny_cnn", "--input", "1x3x32x32"]
FAST = ["--iters", "5", "--seconds", "0", "--warmup", "1"]
TENSORRT_MISSING = get_backend("tensorrt").unavailable_reason()  # what this machine lacks, by TensorRT's own check


def test_export_then_inspect(tmp_path):
    out = tmp_path / "tiny-ort"
    proc = edgeopt("export", *TINY, "--backend", "onnxruntime", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "ok onnxruntime fp32" in proc.stdout and "top-1 agreement 1.000" in proc.stdout
    assert (out / "model.onnx").is_file() and (out / "manifest.json").is_file()
    proc = edgeopt("inspect", str(out))
    assert proc.returncode == 0 and "sha256 ok" in proc.stdout
    assert_one_line_error(edgeopt("export", *TINY, "--backend", "onnxruntime", "--out", str(out)), "already exists")


def test_altered_manifest_is_one_error_line(tmp_path):
    out = tmp_path / "tiny-eager"
    assert edgeopt("export", *TINY, "-b", "eager", "-o", str(out)).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"]["sha256"] = "f" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(edgeopt("inspect", str(out)), "weights.safetensors", "sha256")


def test_truncated_onnx_is_one_error_line(tmp_path):
    import torch

    from edgeopt.models.zoo import tiny_cnn

    path = tmp_path / "m.onnx"
    torch.onnx.export(tiny_cnn(), (torch.zeros(1, 3, 32, 32),), path, dynamo=True, external_data=False, verbose=False)
    path.write_bytes(path.read_bytes()[:5000])
    for command in (["bench", str(path)], ["export", str(path), "-b", "openvino", "-o", str(tmp_path / "x")]):
        assert_one_line_error(edgeopt(*command), "not a valid ONNX model", "truncated")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["bench", "torchvision:no_such_net"], "torchvision has no model 'no_such_net'"),
        (["bench", "no_such_model"], "is not understood"),
        (["export", *TINY, "-b", "nope", "-o", "x"], "unknown backend 'nope'"),
        (["bench", *TINY, "--batch", "1,zero"], "--batch"),
        (["export", *TINY, "-b", "eager", "-o", "x", "--precision", "int8"], "not int8"),
        (["export", "edgeopt.models.zoo:tiny_cnn?in_channels=1", "--input", "1x1x8x8", "-b", "executorch", "-o", "x",
          "--precision", "int8", "--calibrate", "digits", "--max-accuracy-drop", "1"], "has no 'aware' INT8"),
        (["export", *TINY, "-b", "onnxruntime", "-o", "x", "--precision", "int8"], "needs calibration data"),
        pytest.param(["export", *TINY, "-b", "tensorrt", "-o", "x"], "tensorrt cannot be used here",
                     marks=pytest.mark.skipif(not TENSORRT_MISSING, reason="TensorRT runs here")),
    ],
)
def test_user_errors_are_one_line(args, phrase, tmp_path):
    assert_one_line_error(edgeopt(*args, cwd=tmp_path), phrase)
    assert not (tmp_path / "x").exists()


def test_bench_json_has_environment_and_every_result_field(tmp_path):
    out = tmp_path / "bench.json"
    proc = edgeopt("bench", *TINY, "--backends", "eager,onnxruntime,tensorrt", "--batch", "1,4",
                   "--threads", "1", *FAST, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"cpu", "isa_flags", "usable_cpus", "versions"} <= set(report["environment"])
    assert report["config"]["threads"] == 1 and report["config"]["batches"] == [1, 4]
    rows = {r["backend"]: r for r in report["results"]}
    assert list(rows) == ["eager", "onnxruntime", "tensorrt"]
    assert report["schema"] == 2
    for name in ("eager", "onnxruntime"):
        row = rows[name]
        m = row["measurement"]
        assert row["status"] == "ok" and row["reason"] is None and row["precision"] == "fp32"
        assert 0 < m["latency_ms"] <= m["p90_ms"] <= m["p99_ms"]
        assert m["throughput"]["1"] > 0 and m["throughput"]["4"] > 0 and m["threads"] == 1
        assert m["size_mb"] > 0 and m["peak_rss_mb"] > 0
        assert row["parity"]["max_abs_diff"] <= 1e-3 and row["parity"]["top1_agreement"] == 1.0
    assert rows["onnxruntime"]["runtime_imports_torch"] is False
    assert rows["eager"]["speedup_vs_eager"] == 1.0
    if TENSORRT_MISSING:
        assert rows["tensorrt"]["status"] == "unavailable" and rows["tensorrt"]["reason"] == TENSORRT_MISSING
        assert "tensorrt fp32 unavailable:" in proc.stdout
    else:
        assert rows["tensorrt"]["status"] == "ok", rows["tensorrt"]["reason"]


@pytest.mark.slow
def test_profile_writes_trace_flops_and_runtime_profile(tmp_path):
    out = tmp_path / "prof"
    proc = edgeopt("profile", *TINY, "--backend", "openvino", "--out", str(out), "--iters", "3")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "profile.json").read_text())
    assert summary["flops"]["flops"] > 1e6 and summary["flops"]["params"] > 1000
    assert any("conv" in row["name"] for row in summary["torch"]["operators"])
    trace = json.loads(open(summary["torch"]["trace"]).read())
    assert trace["traceEvents"]
    assert summary["runtime"]["backend"] == "openvino" and summary["runtime"]["layers"][0]["ms"] >= 0
    proc = edgeopt("profile", str(out / "openvino"), "--out", str(tmp_path / "prof2"), "--iters", "2")
    assert proc.returncode == 0 and "openvino per-layer profile" in proc.stdout


@pytest.mark.slow
def test_profile_of_onnxruntime_artifact(tmp_path):
    art = tmp_path / "ort"
    assert edgeopt("export", *TINY, "-b", "onnxruntime", "-o", str(art)).returncode == 0
    proc = edgeopt("profile", str(art), "--out", str(tmp_path / "p"), "--iters", "2")
    assert proc.returncode == 0, proc.stderr
    layers = json.loads((tmp_path / "p" / "profile.json").read_text())["runtime"]["layers"]
    assert any(row["op_type"] == "Conv" for row in layers)


def test_backends_lists_every_runtime():
    proc = edgeopt("backends")
    assert proc.returncode == 0
    for name in ("eager", "torchscript", "onnxruntime", "openvino", "executorch", "tensorrt"):
        assert name in proc.stdout
