"""A running search's events, worded for people (the search itself words nothing).

Example:
    >>> line(events.Skipped("prune 0.5 (15 ep) → onnxruntime int8", "predicted 2.1 ms cannot beat 0.5 ms"))
    ('yellow', 'prune 0.5 (15 ep) → onnxruntime int8: skipped, predicted 2.1 ms cannot beat 0.5 ms')
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from edgeopt.report.search import latency_text, metric_text, points, verdict
from edgeopt.search import events


def line(event: events.Event) -> tuple[str, str] | None:
    """(rich style, text) for ``event``; None for events shown otherwise (training epochs)."""
    if isinstance(event, events.StageStarted):
        what = ("exports of the baseline (no training)" if event.stage == 1
                else f"fine-tuned candidates at most, {event.priority} first")
        return "bold cyan", f"stage {event.stage}: {event.candidates} {what}"
    if isinstance(event, events.CandidateStarted):
        return "dim", f"{event.label}: building and measuring ({clock(event)})"
    if isinstance(event, events.CandidateProgress):
        return "dim", f"  {event.label}: {progress_text(event)} ({clock(event)})"
    if isinstance(event, events.CandidateFinished):
        return "", result_line(event.candidate)
    if isinstance(event, events.FromJournal):
        return "dim", f"{event.candidate.label}: from the journal ({event.candidate.status})"
    if isinstance(event, events.Skipped):
        return "yellow", f"{event.label}: skipped, {event.reason}"
    if isinstance(event, events.NotTried):
        return "yellow", f"{event.label}: not tried, {event.reason}"
    if isinstance(event, events.TrainingPlanned):
        est = " (estimated)" if event.estimated else ""
        predicted = (f"predicted {event.predicted_ms:.2f} ms{est}" if event.predicted_ms is not None
                     else f"no latency prediction (its untrained probe failed: {event.probe_failure})")
        work = f"fine-tuning about {event.training_s / 60:.1f} min" if event.training_s else "its fine-tuned model is already built"
        return "dim", f"{event.label}: {predicted}; {work}"
    if isinstance(event, events.RunoffStarted):
        return "dim", (f"timing {len(event.labels)} near-equal candidates side by side, {event.rounds} more processes "
                       f"each: {', '.join(event.labels)}")
    if isinstance(event, events.RunoffFinished):
        return "", "re-timed (median of the timings): " + ", ".join(
            f"{label} {before:.2f} → {after:.2f} ms" for label, before, after in event.results)
    if isinstance(event, events.BestChanged):
        c = event.candidate
        return "bold green", f"best so far: {c.label} · {latency_text(c)} ms · {metric_text(c)}"
    return None


def clock(event) -> str:
    """The search's clock: '4.3 of 12 min'."""
    return f"{event.used_s / 60:.1f} of {event.budget_s / 60:.3g} min"


def progress_text(event: events.CandidateProgress) -> str:
    """'training batches 340/2250', 'calibration', ..."""
    if event.done is None:
        return event.step
    return f"{event.step} {event.done}/{event.total}" if event.total is not None else f"{event.step} {event.done}"


def result_line(record) -> str:
    if record.status == "stopped":
        return f"{record.label}: stopped — {record.reason}"
    if not record.ok:
        return f"{record.label}: {record.status} — {record.reason}"
    m = record.measurement
    return (f"{record.label}: {latency_text(record)} ms · {metric_text(record)} ({points(record)}) · "
            f"{m.size_mb:.2f} MB · {verdict(record)}")


class SearchPrinter:
    """Prints a search's events on ``console``, one line per event. While a candidate works, a terminal
    shows a live line with its step, the search's clock and the candidate's own (ticking) time; a log
    gets a progress line at most every ``every_s`` seconds instead, and one line per finished training."""

    def __init__(self, console: Console, every_s: float = 30.0) -> None:
        self.console = console
        self.every_s = every_s
        self.live: Progress | None = None
        self.task: TaskID | None = None
        self.epoch = ""  # the last finished epoch, shown beside the step on a terminal
        self.printed_at = 0.0

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.CandidateProgress):
            self._progress(event)
            return
        if isinstance(event, events.TrainingEpoch):
            self._epoch(event)
            return
        if isinstance(event, (events.CandidateFinished, events.Skipped, events.NotTried)):
            self._stop()
        shown = line(event)
        if shown:
            style, text = shown
            self.console.print(Text(text, style=style), soft_wrap=True)
        if isinstance(event, events.CandidateStarted):
            self._start(event)

    def _start(self, event: events.CandidateStarted) -> None:
        self._stop()
        self.printed_at, self.epoch = time.monotonic(), ""
        if self.console.is_terminal:
            self.live = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                 console=self.console, transient=True)
            self.live.start()
            self.task = self.live.add_task(f"  {event.label}", total=None)

    def _progress(self, event: events.CandidateProgress) -> None:
        if self.live is not None:
            epoch = f", {self.epoch}" if self.epoch and event.step.startswith("training") else ""
            self.live.update(self.task, description=f"  {progress_text(event)}{epoch} · {clock(event)}",
                             completed=event.done or 0, total=event.total)
        elif time.monotonic() - self.printed_at >= self.every_s:
            self.printed_at = time.monotonic()
            style, text = line(event)
            self.console.print(Text(text, style=style), soft_wrap=True)

    def _epoch(self, event: events.TrainingEpoch) -> None:
        self.epoch = f"epoch {event.epoch}/{event.epochs}, loss {event.loss:.3f}"
        if event.epoch == event.epochs:
            self.console.print(Text(f"{event.label}: trained {event.epochs} epochs (last loss {event.loss:.3f})",
                                    style="dim"), soft_wrap=True)

    def _stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live, self.task = None, None
