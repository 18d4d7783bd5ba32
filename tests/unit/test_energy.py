"""Energy counters: RAPL package zones summed (subzones are inside them), a counter that rolls over
unrolled, hwmon as the fallback, and none at all said plainly."""

from __future__ import annotations

from pathlib import Path

from edgeopt.measure.energy import UNAVAILABLE, EnergyMeter, estimate_joules


def _zone(root: Path, name: str, energy: int, wrap: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
    return zone / "energy_uj"


def test_rapl_packages_are_summed_subzones_skipped_and_a_rollover_unrolled(tmp_path):
    powercap = tmp_path / "powercap"
    package0 = _zone(powercap, "intel-rapl:0", 1_000_000, 10_000_000)
    package1 = _zone(powercap, "intel-rapl:1", 9_500_000, 10_000_000)
    core = _zone(powercap, "intel-rapl:0:0", 0, 10_000_000)  # the cores' share of package 0: not counted twice
    meter = EnergyMeter.find(roots=(powercap,))
    assert meter is not None and len(meter.counters) == 2 and "RAPL" in meter.source
    start = meter.read_uj()
    package0.write_text("3000000\n")  # +2 J
    package1.write_text("500000\n")  # rolled over: +1 J
    core.write_text("9000000\n")
    assert meter.joules_since(start) == 3.0


def test_hwmon_is_the_fallback_and_no_counter_gives_none(tmp_path):
    hwmon = tmp_path / "hwmon"
    (hwmon / "hwmon0").mkdir(parents=True)
    (hwmon / "hwmon0" / "energy1_input").write_text("5000000\n")
    meter = EnergyMeter.find(roots=(tmp_path / "powercap", hwmon))
    assert meter is not None and meter.source == "hwmon energy sensor"
    start = meter.read_uj()
    (hwmon / "hwmon0" / "energy1_input").write_text("5250000\n")
    assert meter.joules_since(start) == 0.25
    assert EnergyMeter.find(roots=(tmp_path / "nothing",)) is None
    assert UNAVAILABLE.startswith("not available")
    assert estimate_joules(6.4, 0.05) == 6.4 * 0.05
