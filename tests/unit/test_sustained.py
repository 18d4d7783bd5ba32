"""Sustained mode: the drift arithmetic on recorded data, the thermal readers on a fake sysfs, and a short
real run on this machine (temperature reported, or said to be not available)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.measure.sustained import (
    NOT_AVAILABLE,
    drift,
    energy_text,
    energy_used_j,
    read_energy_uj,
    read_power_mw,
    read_temperatures,
    run_sustained,
)


def test_drift_compares_the_p99_of_the_last_window_with_the_first():
    # a recorded 3-minute run: 10 ms for the first minute, a board heating up to 15 ms by the end
    times = np.arange(0, 180, 0.05)
    latencies = np.where(times < 60, 10.0, np.where(times < 120, 12.0, 15.0))
    latencies[::97] += 5.0  # rare spikes: the p99 must see them
    first, last, ratio = drift(times.tolist(), latencies.tolist(), window_s=60)
    assert first == pytest.approx(np.percentile(latencies[times <= 60], 99))
    assert last == pytest.approx(np.percentile(latencies[times >= times.max() - 60], 99))
    assert ratio == pytest.approx(last / first) and ratio > 1.2


def test_a_run_shorter_than_two_windows_is_split_in_halves():
    times = [0.0, 1.0, 2.0, 3.0]
    first, last, ratio = drift(times, [1.0, 1.0, 3.0, 3.0], window_s=60)
    assert (first, last, ratio) == (1.0, 3.0, 3.0)
    with pytest.raises(ValueError):
        drift([0.0], [1.0])


def test_thermal_zones_are_read_in_celsius_and_broken_zones_skipped(tmp_path):
    for index, (kind, millidegrees) in enumerate([("cpu-thermal", "48312"), ("gpu-thermal", "51000"), ("x", "oops")]):
        zone = tmp_path / f"thermal_zone{index}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(millidegrees + "\n")
    assert read_temperatures(tmp_path) == {"cpu-thermal": 48.312, "gpu-thermal": 51.0}
    assert read_temperatures(tmp_path / "absent") == {}


def test_energy_comes_from_rapl_counters_unwrapped_or_from_power_sensors(tmp_path):
    powercap = tmp_path / "powercap"
    for zone, energy in (("intel-rapl:0", "900000000"), ("intel-rapl:0:0", "5"), ("intel-rapl:1", "bad")):
        (powercap / zone).mkdir(parents=True)
        (powercap / zone / "energy_uj").write_text(energy)
        (powercap / zone / "max_energy_range_uj").write_text("1000000000")
    before = read_energy_uj(powercap)
    assert before == {"intel-rapl:0": (900_000_000, 1_000_000_000)}  # sub-zones are inside their package
    after = {"intel-rapl:0": (100_000_000, 1_000_000_000)}  # wrapped past its range
    assert energy_used_j(before, after) == pytest.approx(200.0)
    assert energy_text(200.0, {}, 10.0, 1000) == "200 mJ (RAPL energy counter, whole package)"

    hwmon = tmp_path / "hwmon" / "hwmon0"  # a Jetson's INA3221: two rails, in microwatts
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("ina3221\n")
    for index, (label, microwatts) in enumerate([("VDD_IN", "5000000"), ("VDD_CPU_GPU_CV", "1500000")], start=1):
        (hwmon / f"power{index}_input").write_text(microwatts)
        (hwmon / f"power{index}_label").write_text(label)
    power = read_power_mw(tmp_path / "hwmon")
    assert power == {"ina3221:VDD_IN": 5000.0, "ina3221:VDD_CPU_GPU_CV": 1500.0}
    assert energy_text(None, power, seconds=2.0, runs=100) == "100 mJ (power sensors: ina3221:VDD_IN)"  # the input rail
    assert energy_text(None, {"ina219:power1": 1000.0, "ina219:power2": 500.0}, 1.0, 10).startswith("150 mJ")
    assert energy_text(None, {}, 1.0, 1) == NOT_AVAILABLE and energy_used_j({}, {}) is None


def test_a_short_sustained_run_reports_drift_and_temperature_or_says_it_cannot():
    report = run_sustained(lambda: sum(range(20_000)), seconds=1.0, window_s=0.3).to_dict()
    assert report["runs"] > 10 and report["drift"] > 0 and report["p99_last_ms"] > 0
    assert report["temperatures"] == NOT_AVAILABLE or all(v for v in report["temperatures"].values())
    assert report["energy_per_inference"] == NOT_AVAILABLE


def test_bench_sustained_prints_drift_and_temperature_for_an_artifact(artifact_cache, tmp_path):
    import json

    from tests.helpers import edgeopt

    proc = edgeopt("bench", str(artifact_cache("onnxruntime").path), "--sustained", "2", "--json", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert "drift" in proc.stdout and "temperature:" in proc.stdout and "throttling:" in proc.stdout
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["runs"] > 100 and report["p99_last_ms"] > 0 and 0 < report["drift"] < 100
