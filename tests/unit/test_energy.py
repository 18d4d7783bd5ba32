"""Energy counters: RAPL package zones summed (psys and subzones are not: they hold or lie inside a
package), every rollover unrolled as the tally goes, a failed read skipped, hwmon as the fallback
(socket counters over per-core ones), and none at all said plainly."""

from __future__ import annotations

from pathlib import Path

from edgeopt.measure.energy import UNAVAILABLE, EnergyMeter, EnergyTally, estimate_joules


def _zone(root: Path, name: str, kind: str, energy: int, wrap: int = 10_000_000) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{kind}\n")
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
    return zone / "energy_uj"


def test_rapl_packages_are_summed_and_every_rollover_unrolled(tmp_path):
    powercap = tmp_path / "powercap"
    package0 = _zone(powercap, "intel-rapl:0", "package-0", 1_000_000)
    package1 = _zone(powercap, "intel-rapl:1", "package-1", 9_500_000)
    _zone(powercap, "intel-rapl:2", "psys", 0)  # the whole platform: holds the packages
    _zone(powercap, "intel-rapl:0:0", "core", 0)  # inside package 0
    meter = EnergyMeter.find(roots=(powercap,))
    assert meter is not None and len(meter.counters) == 2 and "RAPL" in meter.source
    tally = EnergyTally(meter)
    package0.write_text("3000000\n")  # +2 J
    package1.write_text("500000\n")  # rolled over: +1 J
    assert tally.update() == 3.0
    package1.write_text("9400000\n")  # +8.9 J
    assert tally.update() == 3.0 + 8.9
    package1.write_text("300000\n")  # rolled over again: +0.9 J, seen because the tally read it in between
    assert abs(tally.update() - (11.9 + 0.9)) < 1e-9
    package0.write_text("")  # a failed read counts nothing and loses nothing
    assert abs(tally.update() - 12.8) < 1e-9
    package0.write_text("3500000\n")
    assert abs(tally.update() - 13.3) < 1e-9


def test_hwmon_is_the_fallback_socket_over_cores_and_no_counter_gives_none(tmp_path):
    hwmon = tmp_path / "hwmon"
    (hwmon / "hwmon0").mkdir(parents=True)
    for index, (label, value) in enumerate([("Ecore000", 1_000_000), ("Esocket0", 5_000_000)], 1):
        (hwmon / "hwmon0" / f"energy{index}_input").write_text(f"{value}\n")
        (hwmon / "hwmon0" / f"energy{index}_label").write_text(f"{label}\n")
    meter = EnergyMeter.find(roots=(tmp_path / "powercap", hwmon))
    assert meter is not None and meter.source.startswith("hwmon") and [p.name for p in meter.counters] == ["energy2_input"]
    tally = EnergyTally(meter)
    (hwmon / "hwmon0" / "energy2_input").write_text("5250000\n")
    assert tally.update() == 0.25
    assert EnergyMeter.find(roots=(tmp_path / "nothing",)) is None
    assert UNAVAILABLE.startswith("not available") and "root" in UNAVAILABLE
    assert estimate_joules(6.4, 0.05) == 6.4 * 0.05
