import math

import numpy as np

from edgeopt.measure.fidelity import compare, sqnr_db, top1_agreement


def _logits(seed=0, n=8, c=10):
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def test_identical_outputs_pass_with_zero_diff():
    ref = [_logits()]
    record = compare(ref, [ref[0].copy()], "fp32", "classification")
    assert record["passed"] and record["max_abs_diff"] == 0.0 and record["top1_agreement"] == 1.0
    assert record["sqnr_db"] is None  # infinite


def test_fp32_diff_is_relative_to_output_scale():
    ref = _logits() * 1000.0
    record = compare([ref], [ref + 0.5], "fp32")
    assert math.isclose(record["max_abs_diff"], 0.5 / np.abs(ref).max(), rel_tol=1e-5)
    assert record["passed"]
    record = compare([ref], [ref + 5.0], "fp32")
    assert not record["passed"] and "max abs diff" in record["reason"]


def test_top1_flip_fails_classifiers_only():
    ref = _logits()
    flipped = ref.copy()
    row = 0
    a, b = np.argsort(ref[row])[-2:]
    flipped[row, a], flipped[row, b] = ref[row, b], ref[row, a]
    assert top1_agreement(ref, flipped) == 7 / 8
    assert not compare([ref], [flipped], "int8", "classification")["passed"]  # 0.875 < 0.9
    assert compare([ref], [flipped], "int8", "unknown")["passed"]  # reported, not judged
    assert not compare([ref], [flipped], "fp32", "classification")["passed"]


def test_int8_judged_by_sqnr_and_top1():
    ref = _logits(n=64)
    noisy = ref + np.random.default_rng(1).normal(0, 0.01, ref.shape).astype(np.float32)
    record = compare([ref], [noisy], "int8", "classification")
    assert record["passed"] and record["sqnr_db"] > 30
    assert sqnr_db(ref, ref * 0) < 1


def test_shape_mismatch_and_nan_fail():
    ref = _logits()
    assert not compare([ref], [ref[:4]], "fp32")["passed"]
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert compare([ref], [bad], "fp32")["reason"] == "non-finite outputs"
    assert top1_agreement(np.zeros((4, 3, 2)), np.zeros((4, 3, 2))) is None
