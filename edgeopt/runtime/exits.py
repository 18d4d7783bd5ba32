"""Running a staged early-exit model: a stage at a time, each row leaving at the first exit sure enough of it.

Rows whose exit's top softmax probability reaches the exit's threshold are answered with that
exit's logits; the others go on, as features, into the next stage — so a batch shrinks as it goes
and an easy image never meets the later stages. The last stage answers whatever is left. Torch-free:
the stages are ONNX Runtime or OpenVINO artifacts like any other.

Example:
    >>> runner = ExitRunner.load(StagedExits.open("out/neu-exits"), "max-drop-1")   # doctest: +SKIP
    >>> logits, exits = runner.route(batch)                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgeopt.core.artifact import Artifact
from edgeopt.core.errors import ConfigError
from edgeopt.core.exits import Setting, StagedExits, confidence

if TYPE_CHECKING:
    from edgeopt.measure.latency import TimingConfig


class ExitRunner:
    """One threshold setting of a staged model over its loaded stage sessions (shared between settings)."""

    def __init__(self, sessions: Sequence[Any], thresholds: Sequence[float]) -> None:
        self.sessions = list(sessions)
        self.thresholds = tuple(thresholds)

    @classmethod
    def load_sessions(cls, stages: Sequence[Artifact], threads: int | None = None, shared_cpu: bool = True) -> list[Any]:
        """Every stage's session. ``shared_cpu`` (the default): idle threads sleep rather than spin, since the stages
        run one after another and each has its own thread pool — a pool spinning after its stage took the CPU
        from the next stage's (measured: a batch-1 pass through four spinning stages took 6x the whole model)."""
        from edgeopt.backends import get_backend

        return [get_backend(stage.backend).load(stage, threads=threads, shared_cpu=shared_cpu) for stage in stages]

    @classmethod
    def load(cls, staged: StagedExits, setting: str, threads: int | None = None) -> "ExitRunner":
        return cls(cls.load_sessions(staged.stages, threads), staged.setting(setting).thresholds)

    def route(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits per row, the exit each row left at)."""
        rows = np.arange(len(batch))
        logits: np.ndarray | None = None
        exits = np.full(len(batch), len(self.sessions) - 1)
        features = batch
        for index, session in enumerate(self.sessions):
            outputs = session.run([features])
            if index == len(self.sessions) - 1:
                answer = outputs[0]
                leaving = np.ones(len(rows), bool)
            else:
                features, answer = outputs[0], outputs[1]
                leaving = confidence(answer) >= self.thresholds[index]
            if logits is None:
                logits = np.zeros((len(batch), *answer.shape[1:]), np.float32)
            logits[rows[leaving]] = answer[leaving]
            exits[rows[leaving]] = index
            rows, features = rows[~leaving], features[~leaving]
            if not len(rows):
                break
        return logits, exits

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The logits alone, as a runtime session's ``run``: wherever a session runs, a setting can."""
        (batch,) = inputs
        return [self.route(batch)[0]]

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """The logits alone, as a served model's ``infer``."""
        return [self.route(batch)[0]]


def time_settings(stages: Sequence[Artifact], inputs: np.ndarray, settings: Sequence[Setting],
                  batches: Sequence[int] = (1, 8), timing: "TimingConfig | None" = None,
                  threads: int | None = None) -> list[Setting]:
    """``settings``, each with its p50/p99 per batch size, running the stages on ``inputs`` (preprocessed real
    images) in turn: a setting's time depends on how many images leave early, so it is never timed on zeros.
    The sessions idle as a server's do (``shared_cpu``)."""
    import dataclasses
    import itertools

    from edgeopt.measure.latency import TimingConfig, summarize, time_calls

    timing = timing or TimingConfig(warmup=3, min_iters=10, min_seconds=0.5)
    if max(batches) > len(inputs):
        raise ConfigError(f"cannot time a batch of {max(batches)} on {len(inputs)} validation images; time smaller "
                          "batches, or hold out more images")
    sessions = ExitRunner.load_sessions(stages, threads)
    timed = []
    for setting in settings:
        runner, latency = ExitRunner(sessions, setting.thresholds), {}
        for batch in batches:
            chunks = itertools.cycle([inputs[i:i + batch] for i in range(0, max(1, len(inputs) - batch + 1), batch)])
            stats = summarize(time_calls(lambda: runner.route(next(chunks)), timing), batch)
            latency[int(batch)] = {"p50": round(stats["p50"], 4), "p99": round(stats["p99"], 4)}
        timed.append(dataclasses.replace(setting, latency_ms=latency))
    return timed


def task_of_exits(staged: StagedExits):
    """The task that reads ``staged``'s answers. The record names it (a stranger's file): a task whose outputs need a
    description (a detector's anchors) is refused here, since an early-exit record carries none."""
    from edgeopt.tasks import get_task

    return get_task(staged.task).bind(None)
