"""Judging candidates: a working INT8 that flips borderline predictions is scored and judged by the goal;
a broken compile (constant outputs) is still refused."""

from __future__ import annotations

import pytest

import edgeopt
from edgeopt.backends import register_backend
from edgeopt.core.errors import ParityError
from edgeopt.models.sources import load_model
from tests.plugins import borderline
from tests.plugins.constant_backend import BACKEND as CONSTANT

pytest.importorskip("onnxruntime")
SPACE = edgeopt.SearchSpace(backends=("onnxruntime",), prune_ratios=(), resolutions=(), students=(), qat=False,
                            calibration_samples=200)


@pytest.fixture
def borderline_model(tmp_path):
    return borderline.write(tmp_path)


@pytest.fixture
def constant_backend():
    """The broken backend, registered as a plugin would be, and gone again after the test."""
    from edgeopt.backends import _registry

    register_backend(CONSTANT)
    yield CONSTANT
    _registry().pop(CONSTANT.name)


def test_int8_that_flips_borderline_predictions_is_scored_and_judged_by_the_goal(borderline_model, tmp_path):
    checkpoint, data = borderline_model
    outcome = edgeopt.optimize(str(checkpoint), str(data), tmp_path / "search", space=SPACE, budget="5m")
    int8 = next(r for r in outcome.records if r.precision == "int8" and r.quantization == "static")
    assert int8.status == "ok", int8.reason  # the old parity bar (top-1 agreement 0.9 on the probe) refused it
    agreement = int8.measurement.fidelity["top1_agreement"]
    assert 0.5 < agreement < 0.9  # it really flips borderline predictions
    assert int8.drop_points == pytest.approx(0.0) and int8.meets_goals  # ...without costing accuracy
    probe_parity = edgeopt.Artifact.open(tmp_path / "search" / int8.artifact).parity
    assert probe_parity["passed"] and probe_parity["top1_agreement"] < 0.9


@pytest.mark.slow  # 14 s: the flipped-predictions test above keeps the goal's judging in the fast tier
def test_the_goal_still_judges_an_int8_that_does_cost_accuracy(borderline_model, tmp_path):
    checkpoint, data = borderline_model
    goals = edgeopt.Goals(max_drop=-1.0)  # INT8 would have to gain a point: judged a miss, not failed
    outcome = edgeopt.optimize(str(checkpoint), str(data), tmp_path / "search", goals=goals, space=SPACE, budget="5m")
    int8 = next(r for r in outcome.records if r.precision == "int8" and r.quantization == "static")
    assert int8.status == "ok" and [v.goal for v in int8.violations] == ["max_drop"]
    assert outcome.chosen is None


def test_a_broken_compile_with_constant_outputs_is_refused(constant_backend, tmp_path):
    model = load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x16x16")
    with pytest.raises(ParityError, match="constant outputs"):
        edgeopt.export(model, "constant-broken", tmp_path / "broken")
    assert not (tmp_path / "broken").exists()


def test_the_search_reports_a_broken_compile_as_failed_with_the_reason(borderline_model, constant_backend, tmp_path):
    checkpoint, data = borderline_model
    space = edgeopt.SearchSpace(backends=("onnxruntime", "constant-broken"), int8=False, prune_ratios=(),
                                resolutions=(), students=(), qat=False)
    outcome = edgeopt.optimize(str(checkpoint), str(data), tmp_path / "search", space=space, budget="5m")
    broken = next(r for r in outcome.records if r.backend == "constant-broken")
    assert broken.status == "failed" and "constant outputs" in broken.reason
    assert outcome.chosen.backend == "onnxruntime"


def test_a_model_without_a_task_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(edgeopt.ConfigError, match="task is unknown"):
        edgeopt.optimize("edgeopt.models.zoo:tiny_cnn?in_channels=1", "digits", tmp_path / "search", space=SPACE)
    assert not (tmp_path / "search").exists()
