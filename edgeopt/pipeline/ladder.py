"""Assembling a ladder: artifacts measured, ordered from the most accurate to the fastest, and written.

Each artifact's quality is the task's metrics on the data's test split (when data is given; else
the order given is kept) and its latency per batch size is timed in a fresh worker process, as
every edgeopt latency is. Rungs are kept from the most accurate down, each only when it is a
real speed step: at least ``min_speedup`` times cheaper per row, at the largest batch, than the
rung kept above it (a rung that costs accuracy and saves nothing would only be chosen by mistake).
``edgeopt ladder`` and ``optimize --ladder`` both come here.

Example:
    >>> ladder = assemble("out/neu-ladder", ["out/ov-fp32", "out/ov-int8", "out/prune75-int8"],
    ...                   data="../shared/datasets/neu_cls/neu_cls_64.npz")          # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from edgeopt.core.artifact import Artifact
from edgeopt.core.errors import ConfigError
from edgeopt.core.ladder import MAX_RUNGS, Ladder, check_interchangeable, write_ladder
from edgeopt.measure.environment import collect as collect_environment
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.process import MeasureConfig, time_artifact


@dataclass(frozen=True)
class LadderConfig:
    batches: tuple[int, ...] = (1, 2, 4, 8)  # latency is measured at each: the controller plans with them
    min_speedup: float = 1.25  # a rung must cost at most 1/this per row of the rung kept above it
    max_rungs: int = 4
    keep_order: bool = False  # the artifacts are given most accurate first: score them, but do not reorder
    threads: int | None = None
    timing: TimingConfig = field(default_factory=lambda: TimingConfig(warmup=5, min_iters=20, min_seconds=1.0))

    def __post_init__(self) -> None:
        if self.min_speedup < 1 or not 1 <= self.max_rungs <= MAX_RUNGS:
            raise ConfigError(f"min_speedup must be >= 1 and max_rungs from 1 to {MAX_RUNGS}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive, got {self.batches}")


@dataclass
class Measured:
    """One artifact considered for a rung: its quality, its latency per batch size, and a verdict."""

    artifact: Artifact
    quality: dict[str, float]
    latency_ms: dict[int, dict[str, float]]
    kept: bool = False
    reason: str = ""

    @property
    def ms_per_row(self) -> float:
        """Its cost under load: p50 at the largest batch measured, per row."""
        batch = max(self.latency_ms)
        return self.latency_ms[batch]["p50"] / batch


def assemble(out: str | os.PathLike, artifacts: Sequence[str | os.PathLike], *, data: str | None = None,
             qualities: Sequence[dict[str, float]] | None = None, config: LadderConfig = LadderConfig(),
             overwrite: bool = False, say: Callable[[str], None] = lambda line: None) -> tuple[Ladder, list[Measured]]:
    """Measure ``artifacts``, keep the rungs worth having, write the ladder at ``out``; returns it and every
    artifact's measurement with its verdict (kept, or why not). ``qualities``: each artifact's metrics as
    already measured (a search's, in the search's order, most accurate first), instead of scoring them on ``data``."""
    opened = [Artifact.open(path) for path in artifacts]
    if not opened:
        raise ConfigError("a ladder needs at least one artifact")
    if qualities is not None and len(qualities) != len(opened):
        raise ConfigError("give one quality record per artifact, or none")
    check_interchangeable(opened, "these artifacts")
    measured = [measure(artifact, data if qualities is None else None, config, say) for artifact in opened]
    for item, quality in zip(measured, qualities or []):
        item.quality = {k: float(v) for k, v in quality.items()}
    # the order given holds with keep_order or qualities given (a search's): a one-image difference on the test split
    # would otherwise put an INT8 copy above its FP32 original
    metric = _main_metric(opened[0]) if qualities is None and data is not None and not config.keep_order else None
    kept = choose_rungs(measured, metric, config)
    ladder = write_ladder(out, [(m.artifact, m.quality, m.latency_ms) for m in kept],
                          measured_on={**collect_environment(), "threads": config.threads}, overwrite=overwrite)
    return ladder, measured


def measure(artifact: Artifact, data: str | None, config: LadderConfig,
            say: Callable[[str], None] = lambda line: None) -> Measured:
    """Quality on ``data``'s test split (when given) and p50/p99 per batch size of one artifact."""
    quality: dict[str, float] = {}
    if data is not None:
        say(f"scoring {artifact.path} on {data}")
        quality = score(artifact, data, config.threads)
    spec = artifact.input_spec
    batches = config.batches if spec.dynamic_batch else (spec.shape[0],)
    if spec.max_batch is not None:
        batches = tuple(b for b in batches if b <= spec.max_batch) or (1,)
    say(f"timing {artifact.path} at batch {', '.join(map(str, batches))}")
    timing = time_artifact(artifact.path, MeasureConfig(threads=config.threads, batches=tuple(batches),
                                                        timing=config.timing))
    latency = {int(b): {"p50": round(v["p50"], 4), "p99": round(v["p99"], 4)} for b, v in timing["batches"].items()}
    return Measured(artifact, quality, latency)


def score(artifact: Artifact, data: str, threads: int | None = None) -> dict[str, float]:
    """The task's metrics of ``artifact`` on ``data``'s test split."""
    from edgeopt.backends import get_backend
    from edgeopt.measure.inference import outputs_on
    from edgeopt.tasks import task_of

    task = task_of(artifact, default="classification")
    test = task.load(data, artifact.input_spec).test
    session = get_backend(artifact.backend).load(artifact, threads=threads)
    return {k: float(v) for k, v in task.score(outputs_on(session.run, test, artifact.input_spec), test).items()}


def choose_rungs(measured: list[Measured], metric, config: LadderConfig) -> list[Measured]:
    """The rungs worth having, most accurate first: ordered by ``metric`` (None: as given), then each kept
    only if it is ``min_speedup`` times cheaper per row than the last kept; at most ``max_rungs``."""
    ordered = measured
    if metric is not None:
        sign = 1 if metric.higher_is_better else -1
        ordered = sorted(measured, key=lambda m: (-sign * m.quality.get(metric.name, float("-inf") * sign),
                                                  m.ms_per_row))
    kept: list[Measured] = []
    for candidate in ordered:
        if len(kept) == config.max_rungs:
            candidate.reason = f"the ladder already holds {config.max_rungs} rungs (--max-rungs)"
        elif kept and candidate.ms_per_row * config.min_speedup > kept[-1].ms_per_row:
            candidate.reason = (f"{candidate.ms_per_row:.3f} ms per row is not {config.min_speedup:g}x cheaper than "
                                f"the rung above ({kept[-1].ms_per_row:.3f} ms)")
        else:
            candidate.kept = True
            kept.append(candidate)
    return kept


def _main_metric(artifact: Artifact):
    from edgeopt.tasks import task_of

    return task_of(artifact, default="classification").main

