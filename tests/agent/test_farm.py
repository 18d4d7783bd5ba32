"""A farm of two emulated devices — an agent on one core, another on a second core at half speed (a CFS
bandwidth limit, where the cgroup v1 cpu controller is writable) — times every candidate of one search on
both at once; ``device`` names the agent that decides; the report has a latency column per device and
each device's own choice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

import edgeopt
from tests.helpers import AGENT_TOKEN, running_agent

SPACE = edgeopt.SearchSpace(backends=("onnxruntime", "openvino"), prune_ratios=(), resolutions=(), students=(),
                            qat=False)
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")


def _half_speed(name: str) -> tuple[tuple[str, ...], Path | None]:
    """A prefix that puts a process (and its children) in a cgroup limited to half a CPU in 2 ms periods;
    no prefix where this machine does not allow it (the device is then one core at full speed)."""
    group = CPU_CGROUPS / name
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text("2000")
        (group / "cpu.cfs_quota_us").write_text("1000")
    except OSError:
        return (), None
    return ("sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh"), group


@pytest.mark.slow
def test_a_farm_of_two_devices_times_every_candidate_on_both_at_once(trained, tmp_path):
    checkpoint, _ = trained
    limit, group = _half_speed(f"edgeopt-test-farm-{time.monotonic_ns()}")
    fast = running_agent(tmp_path / "fast", "--name", "one-core", prefix=("taskset", "-c", "0"))
    slow = running_agent(tmp_path / "slow", "--name", "half-speed", prefix=(*limit, "taskset", "-c", "1"))
    both_busy, done = [], threading.Event()

    def watch() -> None:  # both devices measuring at one instant: the farm measures concurrently
        while not done.is_set():
            try:
                busy = [httpx.get(f"{a.url}/v1/health", timeout=2).json()["busy"] for a in (fast, slow)]
            except httpx.HTTPError:
                busy = [False]
            both_busy.append(all(busy))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        with fast, slow:
            watcher.start()
            targets = [edgeopt.AgentTarget(a.url, AGENT_TOKEN) for a in (fast, slow)]
            outcome = edgeopt.optimize(str(checkpoint), "digits", tmp_path / "search", space=SPACE, budget="15m",
                                       agent=targets[0], farm=targets[1:], device="half-speed",
                                       measurements=tmp_path / "measurements")
            done.set()
            watcher.join()
    finally:
        done.set()
        if group is not None:
            group.rmdir()
    assert any(both_busy), "the two devices never measured at the same time"
    assert outcome.measured_on.startswith("half-speed (")  # --device named the deciding agent
    assert [label.split(" (")[0] for label in outcome.device["farm"]] == ["one-core"]
    other = outcome.device["farm"][0]
    measured = [r for r in outcome.records if r.ok]
    assert len(measured) >= 3
    for record in measured:
        assert record.measurement.measured_on == outcome.measured_on
        assert record.measurement.on_devices[other] > 0  # the same candidate, timed on the other device too
    report = (tmp_path / "search" / "report.md").read_text()
    assert "p50 ms half-speed" in report and "p50 ms one-core" in report
    assert "Chosen on each device of the farm" in report and "— half-speed (deciding): " in report
    assert "; one-core: " in report
