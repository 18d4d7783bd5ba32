"""Before/after figures: one Measurement of a PyTorch model or an artifact, measured the same way.

Quality is the task's metrics on a dataset; latency is p50 at batch 1 in a fresh worker
process (a PyTorch model is timed as its eager artifact); MACs and parameters come from
the one MAC counter. ``prune``, ``distill``, ``quantize`` and ``train`` report these.

Example:
    >>> before = measure_model(model, splits.test, task, threads=2)          # doctest: +SKIP
    >>> after = measure_artifact(artifact, splits.test, task, reference=model)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.measure.inference import outputs_on
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.process import MeasureConfig, measurement_from, time_artifact
from edgeopt.measure.profile import count_flops_and_params
from edgeopt.measure.measurement import Measurement

if TYPE_CHECKING:
    from edgeopt.core.artifact import Artifact
    from edgeopt.models.sources import LoadedModel
    from edgeopt.tasks import Task


def measure_model(model: "LoadedModel", dataset, task: "Task", threads: int | None = None,
                  timing: TimingConfig = TimingConfig()) -> Measurement:
    """The task's metrics of ``model`` (eager FP32) on ``dataset``, its cost, and its eager latency."""
    from edgeopt.compile import export

    metrics = task.score(outputs_on(model.reference(), dataset, model.input_spec), dataset)
    cost = count_flops_and_params(model)
    with tempfile.TemporaryDirectory(prefix="edgeopt-measure-") as scratch:
        artifact = export(model, "eager", Path(scratch) / "eager", threads=threads)
        measured = _timed(artifact, threads, timing, dataset)
    return dataclasses.replace(measured, metrics=metrics, macs=cost["macs"], params=cost["params"])


def measure_artifact(artifact: "Artifact", dataset, task: "Task", threads: int | None = None,
                     reference: "LoadedModel | None" = None, timing: TimingConfig = TimingConfig()) -> Measurement:
    """The task's metrics of ``artifact`` on ``dataset`` (with fidelity to ``reference``), and its latency."""
    from edgeopt.backends import open_session

    outputs = outputs_on(open_session(artifact.path, threads=threads).run, dataset, artifact.input_spec)
    fidelity = {}
    if reference is not None:
        fidelity = task.fidelity(outputs_on(reference.reference(), dataset, reference.input_spec), outputs)
    measured = _timed(artifact, threads, timing, dataset)
    return dataclasses.replace(measured, metrics=task.score(outputs, dataset), fidelity=fidelity)


def _timed(artifact: "Artifact", threads: int | None, timing: TimingConfig, dataset) -> Measurement:
    """Latency on real samples of ``dataset`` (a detector's NMS works as hard as on real images)."""
    from edgeopt.images import to_input

    config = MeasureConfig(threads=threads, timing=timing)
    inputs = to_input(dataset.images[:16], artifact.input_spec)
    return measurement_from(time_artifact(artifact.path, config, inputs), artifact.size_bytes, config.thread_count)
