"""Running a staged early-exit model: a stage at a time, each row leaving at the first exit sure enough of it.

Rows whose exit's top softmax probability reaches the exit's threshold are answered with that
exit's logits; the others go on, as features, into the next stage — so a batch shrinks as it goes
and an easy image never meets the later stages. The last stage answers whatever is left. Torch-free:
the stages are ONNX Runtime or OpenVINO artifacts like any other.

Example:
    >>> runner = ExitRunner.load(StagedExits.open("out/neu-exits"), "max-drop-1")   # doctest: +SKIP
    >>> logits, exits = runner.run(batch)                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgeopt.core.exits import StagedExits, confidence


class ExitRunner:
    """One threshold setting of a staged model over its loaded stage sessions (shared between settings)."""

    def __init__(self, sessions: Sequence[Any], thresholds: Sequence[float]) -> None:
        self.sessions = list(sessions)
        self.thresholds = tuple(thresholds)

    @classmethod
    def load_sessions(cls, staged: StagedExits, threads: int | None = None, shared_cpu: bool = True) -> list[Any]:
        """Every stage's session. ``shared_cpu`` (the default): idle threads sleep rather than spin, since the stages
        run one after another and each has its own thread pool — a pool spinning after its stage took the CPU
        from the next stage's (measured: a batch-1 pass through four spinning stages took 6x the whole model)."""
        from edgeopt.backends import get_backend

        return [get_backend(stage.backend).load(stage, threads=threads, shared_cpu=shared_cpu) for stage in staged.stages]

    @classmethod
    def load(cls, staged: StagedExits, setting: str, threads: int | None = None) -> "ExitRunner":
        return cls(cls.load_sessions(staged, threads), staged.setting(setting).thresholds)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """The logits alone, as any model's ``infer``."""
        return [self.run(batch)[0]]
