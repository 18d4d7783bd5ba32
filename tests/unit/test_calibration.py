"""The estimator's correction: arithmetic on recorded measurements, and the store that keeps them."""

from __future__ import annotations

import math

import pytest

from edgeopt.devices.calibration import UNCALIBRATED, Correction, MeasurementStore, Observation, fit


def observation(estimate: float, measured: float, backend: str = "onnxruntime") -> Observation:
    return Observation("rpi4b", backend, "fp32", estimate_ms=estimate, measured_ms=measured)


def test_the_correction_is_the_median_ratio_and_its_interval_covers_every_record():
    records = [observation(1.0, 1.5), observation(2.0, 4.0), observation(4.0, 10.0)]  # ratios 1.5, 2, 2.5
    correction = fit(records, "onnxruntime")
    assert correction.factor == pytest.approx(2.0) and correction.basis == 3
    assert correction.spread == pytest.approx(math.log(2.0 / 1.5) * (1 + 1 / 3))  # the farthest record, widened
    for record in records:
        _, low, high = correction.apply(record.estimate_ms)
        assert low <= record.measured_ms <= high


def test_a_backend_without_records_borrows_the_device_s_and_none_at_all_is_uncalibrated():
    records = [observation(1.0, 3.0, "openvino"), observation(2.0, 6.0, "openvino")]
    borrowed = fit(records, "onnxruntime")
    assert borrowed.factor == pytest.approx(3.0) and "every backend" in borrowed.scope
    assert fit([observation(1.0, 3.0)], "onnxruntime") == Correction()
    centre, low, high = Correction().apply(6.0)
    assert centre == 6.0 and low == pytest.approx(2.0) and high == pytest.approx(18.0) and Correction().spread == UNCALIBRATED


def test_the_store_keeps_records_by_device_and_skips_lines_it_cannot_read(tmp_path):
    store = MeasurementStore(tmp_path)
    store.add(observation(1.0, 2.0))
    store.add(Observation("jetson-nano", "onnxruntime", "int8", estimate_ms=1.0, measured_ms=1.0))
    with (tmp_path / "rpi4b.jsonl").open("a") as handle:
        handle.write('{"device": "rpi4b", "backend": "onnx')  # a line a kill cut short
        handle.write('\n{"device": "rpi4b", "backend": "x", "precision": "fp32", "estimate_ms": 0, "measured_ms": 1}\n')
    assert [o.measured_ms for o in store.observations("rpi4b")] == [2.0]
    assert store.observations("rpi4b")[0].when  # stamped when filed
    assert store.correction("nowhere", "onnxruntime") == Correction()
    with pytest.raises(ValueError):
        observation(-1.0, 1.0)
