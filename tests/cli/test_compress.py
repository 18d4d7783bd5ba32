"""`edgeopt prune` and `edgeopt distill` on scikit-learn's digits, through real processes.

Both build through the same recipe builder as `edgeopt build`: the recipe a command writes
beside its checkpoint rebuilds the same weights.
"""

import json

import pytest
from safetensors.torch import load_file

from edgeopt.models.sources import load_model
from tests.helpers import edgeopt

pytest.importorskip("torch_pruning")
pytestmark = pytest.mark.slow  # each trains through a real process


def params(path) -> int:
    return sum(p.numel() for p in load_model(str(path)).module.parameters())


def test_prune_removes_channels_fine_tunes_and_compares(trained, tmp_path):
    out, _ = trained
    pruned = tmp_path / "pruned.safetensors"
    proc = edgeopt("prune", str(out), "--data", "digits", "--ratio", "0.5", "--round-to", "1", "--epochs", "2",
                   "--lr", "0.01", "--out", str(pruned), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(pruned.with_suffix(".json").read_text())
    assert summary["macs_after"] < summary["macs_before"] / 2 and summary["protected"] == ["head"]
    assert params(pruned) < params(out) / 2
    assert summary["after"]["metrics"]["top1"] > 0.6
    assert "pruned" in proc.stdout and "MMACs" in proc.stdout and "speed-up" in proc.stdout
    assert pruned.with_suffix(".recipe.toml").is_file()


def test_the_cli_and_edgeopt_build_make_identical_weights_from_one_recipe(trained, tmp_path):
    out, _ = trained
    pruned = tmp_path / "pruned.safetensors"
    proc = edgeopt("prune", str(out), "--data", "digits", "--ratio", "0.5", "--epochs", "1", "--out", str(pruned),
                   "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    rebuilt = tmp_path / "rebuilt"
    proc = edgeopt("build", str(pruned.with_suffix(".recipe.toml")), "--out", str(rebuilt), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    mine, theirs = load_file(str(pruned)), load_file(str(rebuilt / "weights.safetensors"))
    assert mine.keys() == theirs.keys()
    assert all((mine[k] == theirs[k]).all() for k in mine)


def test_unstructured_prune_says_it_is_not_faster(trained, tmp_path):
    out, _ = trained
    proc = edgeopt("prune", str(out), "--data", "digits", "--sparsity", "0.5", "--epochs", "1",
                   "--out", str(tmp_path / "sparse.safetensors"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "sparse.json").read_text())["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert "run no faster" in " ".join(proc.stdout.split())


def test_distill_into_a_narrower_student_at_lower_resolution(trained, tmp_path):
    out, _ = trained
    student = tmp_path / "student.safetensors"
    proc = edgeopt("distill", "edgeopt.models.zoo:tiny_cnn?width=8", "--teacher", str(out), "--data", "digits",
                   "--epochs", "5", "--optimizer", "adamw", "--lr", "0.01", "--input-size", "6", "--out", str(student),
                   "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    loaded = load_model(str(student))
    assert loaded.input_spec.shape[-2:] == (6, 6) and params(student) < params(out)
    summary = json.loads(student.with_suffix(".json").read_text())
    fine_tune = summary["recipe"]["steps"][0]["fine_tune"]
    assert fine_tune["temperature"] == 3.0 and fine_tune["alpha"] == 0.7 and fine_tune["distill"]
    assert summary["after"]["metrics"]["top1"] > 0.5


def test_prune_errors_are_one_line(trained, tmp_path):
    out, _ = trained
    proc = edgeopt("prune", str(out), "--data", "digits", "--ratio", "1.5", "--out", str(tmp_path / "x.safetensors"))
    assert proc.returncode == 1 and proc.stderr.startswith("error: the pruning ratio must be between 0 and 1")
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.safetensors").exists()
