"""The estimator's correction: arithmetic on recorded measurements, and the store that keeps them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeopt.devices.calibration import T95, UNCALIBRATED, Correction, MeasurementStore, Observation, fit


def observation(estimate: float, measured: float, backend: str = "onnxruntime", precision: str = "fp32") -> Observation:
    return Observation("rpi4b", backend, precision, estimate_ms=estimate, measured_ms=measured)


def test_the_correction_is_the_mean_log_ratio_with_a_t_prediction_interval():
    records = [observation(1.0, 1.5), observation(2.0, 4.0), observation(4.0, 10.0)]  # ratios 1.5, 2, 2.5
    correction = fit(records, "onnxruntime", "fp32")
    logs = np.log([1.5, 2.0, 2.5])
    assert correction.factor == pytest.approx(math.exp(logs.mean())) and correction.basis == 3
    assert correction.spread == pytest.approx(T95[1] * logs.std(ddof=1) * math.sqrt(1 + 1 / 3))
    for record in records:
        _, low, high = correction.apply(record.estimate_ms)
        assert low <= record.measured_ms <= high


def test_the_closest_records_are_used_first_and_none_at_all_is_uncalibrated():
    records = [observation(1.0, 3.0, "openvino"), observation(2.0, 6.0, "openvino"),
               observation(1.0, 1.0, "onnxruntime", "int8"), observation(1.0, 1.0, "openvino", "int8")]
    same_precision = fit(records, "onnxruntime", "fp32")  # no ONNX Runtime FP32 records: FP32 of any backend
    assert same_precision.factor == pytest.approx(3.0) and same_precision.scope == "fp32 on this device"
    assert fit(records, "openvino", "int8").scope == "int8 on this device"
    assert fit([observation(1.0, 2.0, precision="int8"), observation(1.0, 2.0, precision="fp16")], "onnxruntime",
               "fp32").scope == "onnxruntime on this device"
    assert fit([observation(1.0, 3.0)], "onnxruntime", "fp32") == Correction()
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
    assert store.correction("nowhere", "onnxruntime", "fp32") == Correction()
    with pytest.raises(ValueError):
        observation(-1.0, 1.0)
