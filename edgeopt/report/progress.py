"""A running search's events, worded for people (the search itself words nothing).

Example:
    >>> line(events.Skipped("prune 0.5 (15 ep) → onnxruntime int8", "predicted 2.1 ms cannot beat 0.5 ms"))
    ('yellow', 'prune 0.5 (15 ep) → onnxruntime int8: skipped, predicted 2.1 ms cannot beat 0.5 ms')
"""

from __future__ import annotations

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
        return "dim", f"{event.label}: building and measuring ({event.used_s / 60:.1f} of {event.budget_s / 60:.3g} min)"
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
    if isinstance(event, events.BestChanged):
        c = event.candidate
        return "bold green", f"best so far: {c.label} · {latency_text(c)} ms · {metric_text(c)}"
    return None


def result_line(record) -> str:
    if not record.ok:
        return f"{record.label}: {record.status} — {record.reason}"
    m = record.measurement
    return (f"{record.label}: {latency_text(record)} ms · {metric_text(record)} ({points(record)}) · "
            f"{m.size_mb:.2f} MB · {verdict(record)}")


class SearchPrinter:
    """Prints a search's events on ``console``: one line per event, and a bar while a candidate trains
    (on a terminal; logs get one line per finished training)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.TrainingEpoch):
            self._epoch(event)
            return
        shown = line(event)
        if shown:
            style, text = shown
            self.console.print(Text(text, style=style), soft_wrap=True)

    def _epoch(self, event: events.TrainingEpoch) -> None:
        if self.progress is None and self.console.is_terminal:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(f"  training {event.label}", total=event.epochs)
        if self.progress is not None:
            self.progress.update(self.task, completed=event.epoch,
                                 description=f"  training: epoch {event.epoch}/{event.epochs}, loss {event.loss:.3f}")
        if event.epoch == event.epochs:
            self._stop()
            self.console.print(Text(f"{event.label}: trained {event.epochs} epochs (last loss {event.loss:.3f})",
                                    style="dim"), soft_wrap=True)

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None
