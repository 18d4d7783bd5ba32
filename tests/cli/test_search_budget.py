"""The search keeps its budget: a candidate stops at the deadline, the best so far stays, ``resume`` continues."""

from __future__ import annotations

import json
import time

import pytest

import edgeopt
from edgeopt.pipeline.recipe import Step
from edgeopt.search import events
from edgeopt.search.journal import Journal

pytestmark = pytest.mark.slow
BUDGET_S = 75.0  # the set-up and the one stage-1 export fit in it even on a loaded machine; the slow step does not
STEPS = 2000  # of half a second: it cannot finish inside the budget
SLACK_S = 5.0  # a step of the slow pass, the clean-up after it, a loaded machine
LABEL = f"slow ×{STEPS} → eager fp32"


def search(model, out, budget_s: float, resume: bool = False):
    """Run the search: (outcome, its events, the wall-clock second each came at)."""
    space = edgeopt.SearchSpace(backends=("eager",), int8=False, prune_ratios=(), resolutions=(), students=(),
                                qat=False, steps=(Step.of("slow", module="tests.plugins.slow_pass", steps=STEPS),))
    started, seen = time.monotonic(), []
    # accuracy first: the slow step cannot be skipped as unable to beat the best on latency
    outcome = edgeopt.optimize(str(model), "digits", out, space=space, budget=budget_s, resume=resume,
                               goals=edgeopt.Goals(priority="accuracy"),
                               on_event=lambda event: seen.append((time.monotonic() - started, event)))
    return outcome, [event for _, event in seen], [at for at, _ in seen]


def test_a_slow_step_stops_at_the_deadline_and_resume_continues_it(trained, tmp_path, monkeypatch):
    from edgeopt.tasks.classification.data import load_dataset

    load_dataset("digits")  # imports scikit-learn here, not inside the budget
    out = tmp_path / "search"
    outcome, first, times = search(trained[0], out, BUDGET_S)
    slow = {r.label: r for r in outcome.records}.get(LABEL)
    assert slow is not None, f"the machine is too loaded: set-up and stage 1 took the whole budget ({outcome.not_tried})"
    assert slow.status == "stopped" and "the time budget ran out during slow work" in slow.reason
    finished_at = next(at for at, e in zip(times, first)
                       if isinstance(e, events.CandidateFinished) and e.candidate.label == LABEL)
    assert finished_at <= BUDGET_S + SLACK_S  # wall clock: it stopped at the deadline
    assert all(r.finished_at_s <= BUDGET_S + SLACK_S for r in outcome.records)
    assert outcome.elapsed_s <= BUDGET_S + SLACK_S
    # the best so far is on disk, untouched by the stopped candidate
    best = json.loads((out / "best.json").read_text())
    assert best["label"] == "eager fp32" and (out / "best" / "manifest.json").is_file()
    assert outcome.chosen.label == "eager fp32"
    # the clock moved while it worked: progress from inside the step, with the search's time
    progress = [e for e in first if isinstance(e, events.CandidateProgress) and e.step == "slow work"]
    assert len(progress) > 10 and progress[-1].used_s > progress[0].used_s
    assert progress[-1].total == STEPS and 0 < progress[-1].done < STEPS
    results = json.loads((out / "results.json").read_text())
    assert [c["status"] for c in results["candidates"] if c["label"] == LABEL] == ["stopped"]

    monkeypatch.setattr("tests.plugins.slow_pass.STEP_S", 0.001)  # the rest of the work, quickly
    resumed, second, _ = search(trained[0], out, 600.0, resume=True)
    assert {r.label: r for r in resumed.records}[LABEL].status == "ok"  # built again, and finished
    steps = [e.done for e in second if isinstance(e, events.CandidateProgress) and e.step == "slow work"]
    assert min(steps) >= progress[-1].done - 1  # it continued from its checkpoint, not from the start
    assert any(isinstance(e, events.FromJournal) and e.candidate.label == "eager fp32" for e in second)
    lines = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines if r["label"] == LABEL][:2] == ["stopped", "ok"]  # then, perhaps, re-timed
    # the budget carried across the resume: the first run's clock at its last record, then this run's time
    assert Journal(out / "journal.jsonl").elapsed_s() == pytest.approx(lines[-1]["finished_at_s"])
    assert lines[-1]["finished_at_s"] > next(r for r in lines if r["status"] == "stopped")["finished_at_s"]
    assert resumed.elapsed_s > outcome.elapsed_s
