"""Fidelity: FP32 must be the same model; INT8 must only not be broken (a working INT8 that
flips borderline predictions passes, and is judged by its measured metric elsewhere)."""

import math

import numpy as np

from edgeopt.measure.fidelity import compare, signal_db, sqnr_db
from edgeopt.tasks import get_task
from edgeopt.tasks.classification.task import top1_agreement

CLASSIFIER = get_task("classification")


def _logits(seed=0, n=32, c=10):
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def _flip_borderline(ref: np.ndarray, count: int) -> np.ndarray:
    """Swap the top two logits of the ``count`` rows whose margin is smallest (borderline predictions)."""
    flipped = ref.copy()
    ordered = np.sort(ref, axis=1)
    for row in np.argsort(ordered[:, -1] - ordered[:, -2])[:count]:
        a, b = np.argsort(ref[row])[-2:]
        flipped[row, a], flipped[row, b] = ref[row, b], ref[row, a]
    return flipped


def test_identical_outputs_pass_with_zero_diff():
    ref = [_logits()]
    record = compare(ref, [ref[0].copy()], "fp32", CLASSIFIER)
    assert record["passed"] and record["max_abs_diff"] == 0.0 and record["top1_agreement"] == 1.0
    assert record["sqnr_db"] is None  # infinite


def test_fp32_diff_is_relative_to_output_scale():
    ref = _logits() * 1000.0
    record = compare([ref], [ref + 0.5], "fp32")
    assert math.isclose(record["max_abs_diff"], 0.5 / np.abs(ref).max(), rel_tol=1e-5)
    assert record["passed"]
    record = compare([ref], [ref + 5.0], "fp32")
    assert not record["passed"] and "max abs diff" in record["reason"]


def test_fp32_must_agree_exactly_but_int8_may_flip_borderline_predictions():
    ref = _logits()
    flipped = _flip_borderline(ref, 10)  # 10 of 32 flipped: top-1 agreement 0.69, far under the old 0.9 bar
    assert top1_agreement(ref, flipped) == 22 / 32
    assert not compare([ref], [flipped], "fp32", CLASSIFIER)["passed"]
    record = compare([ref], [flipped], "int8", CLASSIFIER)
    assert record["passed"], record
    assert record["top1_agreement"] == 22 / 32  # reported for the judge downstream


def test_constant_outputs_are_a_broken_compile():
    ref = _logits()
    for constant in (np.zeros_like(ref), np.tile(ref.mean(axis=0), (len(ref), 1)), np.full_like(ref, 7.0)):
        record = compare([ref], [constant], "int8", CLASSIFIER)
        assert not record["passed"] and record["reason"].startswith("constant outputs")


def test_outputs_unrelated_to_the_reference_are_broken_even_with_a_large_shared_offset():
    ref = _logits() + 50.0  # a large offset every input shares inflates the plain SQNR
    garbage = _logits(seed=9) + 50.0
    assert sqnr_db(ref, garbage) > 20  # the plain SQNR would call it fine
    assert signal_db(ref, garbage) < 0
    record = compare([ref], [garbage], "int8", CLASSIFIER)
    assert not record["passed"] and "no longer follow the input" in record["reason"]


def test_chance_level_agreement_is_broken_for_a_classifier():
    ref = _logits(n=256, c=100)
    demoted = ref.copy()  # every winning logit sent to the bottom: small error overall, no prediction kept
    demoted[np.arange(len(ref)), ref.argmax(axis=1)] = ref.min(axis=1) - 0.1
    record = compare([ref], [demoted], "int8", CLASSIFIER)
    assert record["signal_db"] > 0 and record["top1_agreement"] == 0.0
    assert not record["passed"] and "no better than chance" in record["reason"]


def test_int8_noise_passes_and_shape_or_nan_fail():
    ref = _logits(n=64)
    noisy = ref + np.random.default_rng(1).normal(0, 0.01, ref.shape).astype(np.float32)
    record = compare([ref], [noisy], "int8", CLASSIFIER)
    assert record["passed"] and record["sqnr_db"] > 30
    assert not compare([ref], [ref[:4]], "fp32")["passed"]
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert compare([ref], [bad], "int8")["reason"].startswith("non-finite outputs")
    assert top1_agreement(np.zeros((4, 3, 2)), np.zeros((4, 3, 2))) is None
