"""`optimize --agent`: every candidate is timed on the device; an agent that dies mid-search leaves its
candidates unmeasured (never estimated), and `--resume` measures exactly those once it is back."""

from __future__ import annotations

import httpx
import pytest

import edgeopt
from edgeopt.search import events
from tests.helpers import AGENT_TOKEN, free_port, running_agent

SPACE = edgeopt.SearchSpace(backends=("onnxruntime", "openvino"), prune_ratios=(), resolutions=(), students=(),
                            qat=False)


@pytest.mark.slow
def test_a_search_on_the_agent_survives_its_death_and_resumes(trained, tmp_path):
    checkpoint, _ = trained
    port, out, measurements = free_port(), tmp_path / "search", tmp_path / "measurements"
    target = edgeopt.AgentTarget(f"http://127.0.0.1:{port}", AGENT_TOKEN, retries=1, backoff_s=0.2)
    agent = running_agent(tmp_path / "store", "--name", "emu", port=port)
    finished = []

    def kill_after_two(event) -> None:
        if isinstance(event, events.CandidateFinished):
            finished.append(event.candidate)
            if len(finished) == 2:
                agent.proc.kill()  # kill -9: no goodbye
                agent.proc.wait()

    try:
        first = edgeopt.optimize(str(checkpoint), "digits", out, space=SPACE, budget="15m", agent=target,
                                 measurements=measurements, on_event=kill_after_two)
    finally:
        agent.stop()
    unmeasured = {r.key for r in first.records if r.status == "unmeasured"}
    measured_first = {r.key: r.measurement for r in first.records if r.ok}
    assert len(measured_first) == 2 and len(unmeasured) >= 3, [(r.label, r.status, r.reason) for r in first.records]
    assert all("did not answer" in r.reason for r in first.records if r.key in unmeasured)
    assert all(m.measured_on.startswith("emu (") and m.host_ms > 0 and not m.estimated for m in measured_first.values())

    with running_agent(tmp_path / "store", "--name", "emu", port=port) as again:
        second = edgeopt.optimize(str(checkpoint), "digits", out, space=SPACE, budget="15m", agent=target,
                                  measurements=measurements, resume=True)
        measured_on_restart = httpx.get(f"{again.url}/v1/health").json()["measured"]
    # an accuracy-aware INT8 left unmeasured is skipped once its plain INT8 sibling, measured now, meets the goals
    skipped_now = {r.key for r in second.records if r.key in unmeasured and r.status == "skipped"}
    assert all("plain PTQ of the same model already meets the goals" in r.reason
               for r in second.records if r.key in skipped_now)
    assert measured_on_restart == len(unmeasured - skipped_now)  # nothing finished was measured again
    assert not [r for r in second.records if r.status == "unmeasured"]
    for record in second.records:
        if record.key in measured_first:
            assert record.measurement == measured_first[record.key]
        if record.ok:
            assert record.measurement.measured_on.startswith("emu (")
    assert second.chosen is not None
    report = (out / "report.md").read_text()
    assert "measured on emu (" in report and "Ranked on the device and here" in report
    filed = (measurements / f"{second.device['id'].removeprefix('agent:')}.jsonl").read_text().splitlines()
    assert len(filed) == len(measured_first) + len(unmeasured - skipped_now)  # every device measurement feeds the estimator
