"""`edgeopt train`, `eval` and `quantize` on scikit-learn's digits, through real processes."""

import json
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.helpers import TRAIN, edgeopt


@pytest.mark.slow
def test_train_writes_checkpoint_summary_and_reports(trained):
    out, proc = trained
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["arch"] == "edgeopt.models.zoo:tiny_cnn?num_classes=10&in_channels=1"
    assert summary["test"]["top1"] > 0.85 and len(summary["history"]) == 4
    assert "test top-1" in proc.stdout and "MMACs" in proc.stdout


@pytest.mark.slow
def test_eval_of_exported_artifact_matches_checkpoint(trained, tmp_path):
    out, _ = trained
    art = tmp_path / "ort"
    assert edgeopt("export", str(out), "-b", "onnxruntime", "-o", str(art)).returncode == 0
    proc = edgeopt("eval", str(art), "--data", "digits", "--reference", str(out), "--json", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    summary = json.loads(out.with_suffix(".json").read_text())
    assert report["metrics"]["top1"] == pytest.approx(summary["test"]["top1"])
    assert report["fidelity"]["top1_agreement"] == 1.0
    assert len(report["confusion"]) == 10


@pytest.mark.slow
def test_train_killed_mid_run_resumes_to_the_same_weights(trained, tmp_path):
    out, _ = trained
    resumed = tmp_path / "digits.safetensors"
    checkpoint = resumed.with_name(resumed.name + ".train.pt")
    proc = subprocess.Popen([sys.executable, "-m", "edgeopt", *TRAIN, "--out", str(resumed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in the epoch after the first checkpoint
    proc.wait()
    assert checkpoint.exists() and not resumed.exists()
    done = edgeopt(*TRAIN, "--out", str(resumed), "--resume")
    assert done.returncode == 0, done.stderr
    expected, got = load_file(str(out)), load_file(str(resumed))
    assert expected.keys() == got.keys()
    assert all((expected[k] == got[k]).all() for k in expected)


def test_bad_dataset_is_one_error_line(tmp_path):
    proc = edgeopt("train", str(tmp_path / "missing.npz"), "--arch", "edgeopt.models.zoo:tiny_cnn", "--out", str(tmp_path / "m.safetensors"))
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "does not exist" in proc.stderr


@pytest.mark.slow
def test_quantize_reports_before_and_after(trained, tmp_path):
    out, _ = trained
    proc = edgeopt("quantize", str(out), "--data", "digits", "-b", "onnxruntime", "-o", str(tmp_path / "q"),
                   "--calibration-samples", "100")
    assert proc.returncode == 0, proc.stderr
    assert "eager FP32" in proc.stdout and "onnxruntime int8" in proc.stdout and "faster" in proc.stdout
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["parity"]["passed"]
    assert manifest["recipe"]["export"]["quantization"]["calibration_samples"] == 100  # built from a recipe
    proc = edgeopt("quantize", str(out), "--data", "digits", "-b", "eager", "-o", str(tmp_path / "e"))
    assert proc.returncode == 1 and "not int8" in proc.stderr and "Traceback" not in proc.stderr
