"""Building a staged early-exit model: the trained exit network compiled stage by stage, thresholds calibrated.

Each stage (with its exit head) is exported like any model — loaded back, run and compared with
PyTorch before it is kept — on ONNX Runtime or OpenVINO, so the runtime really stops computing at
an exit. Thresholds come from validation data the heads were not trained on: for each accuracy
budget (points of top-1 a setting may lose against never leaving early) the cheapest thresholds
in mean MACs per image that stay within it, found on a grid, first shared by every exit, then
refined exit by exit. The settings run from "accuracy-first" (never leave early) to "fastest"
(every image leaves at the first exit).

Example:
    >>> staged = build_exits(exit_model, splits, "out/neu-exits", ExitsConfig(budgets=(0.5, 1.0)))   # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from edgeopt.core.errors import ConfigError
from edgeopt.core.exits import NEVER, Setting, StagedExits, confidence, write_staged_exits
from edgeopt.measure.latency import TimingConfig

if TYPE_CHECKING:
    from edgeopt.core.artifact import Artifact
    from edgeopt.models.sources import LoadedModel

TIMING_IMAGES = 256  # validation images the settings are timed on, in turn
# (stages, preprocessed validation inputs, settings) -> the settings with their latency per batch size
Timer = Callable[[Sequence["Artifact"], np.ndarray, Sequence[Setting]], list[Setting]]
GRID = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, NEVER)


@dataclass(frozen=True)
class ExitsConfig:
    backend: str = "onnxruntime"
    precision: str = "fp32"
    budgets: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)  # points of top-1 a setting may lose on validation
    threads: int | None = None
    batches: tuple[int, ...] = (1, 8)  # each setting is timed at these on validation images: a controller plans with them
    timing: TimingConfig = field(default_factory=lambda: TimingConfig(warmup=3, min_iters=10, min_seconds=0.5))

    def __post_init__(self) -> None:
        if any(b < 0 for b in self.budgets):
            raise ConfigError(f"accuracy budgets are points that may be lost, 0 or more; got {self.budgets}")
        if not self.batches or any(not 1 <= b <= 4096 for b in self.batches):
            raise ConfigError(f"batch sizes to time must be 1 to 4096, got {self.batches}")
        if self.precision != "fp32":
            raise ConfigError("early-exit stages are built at FP32 here; quantize the backbone first, then add exits")


def build_exits(model: "LoadedModel", validation, out: str | os.PathLike, config: ExitsConfig = ExitsConfig(), *,
                timer: Timer | None = None, overwrite: bool = False,
                say: Callable[[str], None] = lambda line: None) -> StagedExits:
    """Compile ``model`` (its module an ``EarlyExitNet``) stage by stage, calibrate its settings on ``validation``
    (an image dataset), time each with ``timer`` (``edgeopt.runtime.exits.time_settings``; None: untimed, and
    then not servable under a latency target), and write the staged model at ``out``."""
    import torch

    from edgeopt.compile import export
    from edgeopt.core.spec import InputSpec
    from edgeopt.images import to_input
    from edgeopt.measure.profile import count_macs
    from edgeopt.models.exits import EarlyExitNet

    net = model.module
    if not isinstance(net, EarlyExitNet):
        raise ConfigError("build_exits takes the model the early_exit pass returns (its module an EarlyExitNet)")
    net.eval()
    stage_models, exit_macs, spent = [], [], 0
    full_macs = count_macs(net, torch.from_numpy(model.input_spec.example(batch=1)))[0]  # the model as it was
    x = torch.from_numpy(model.input_spec.example(batch=1))
    spec = model.input_spec
    with torch.no_grad():
        for index, (stage, part) in enumerate(zip(net.stages, net.parts())):
            last = index == len(net.stages) - 1
            stage_models.append(_stage_model(model, part.eval(), spec, index))
            spent += count_macs(stage, x)[0]
            x = stage(x)
            if not last:  # a row that goes on has had this head run too
                spent += count_macs(net.heads[index], x)[0]
            exit_macs.append(spent)
            spec = InputSpec(shape=(1, *x.shape[1:]), name="features")
    with tempfile.TemporaryDirectory(prefix="edgeopt-exits-") as scratch:
        stages = []
        for index, stage_model in enumerate(stage_models):
            say(f"compiling stage {index} for {config.backend}")
            stages.append(export(stage_model, config.backend, Path(scratch) / f"s{index}", threads=config.threads))
        say("calibrating the exits' thresholds on validation")
        logits = stage_logits(stages, validation, model.input_spec, config.threads)
        settings = calibrate(logits, validation.labels, exit_macs, full_macs, config.budgets)
        if timer is not None:  # the staged model runs in the runtime layer, a sibling of this one: handed in
            say(f"timing each setting at batch {', '.join(map(str, config.batches))} on validation images")
            settings = timer(stages, to_input(validation.images[:TIMING_IMAGES], model.input_spec), settings)
        return write_staged_exits(out, stages, exit_macs, settings, task=model.task, labels=model.labels,
                                  details={"cuts": list(net.cuts), "source": model.source, "full_macs": full_macs,
                                           "validation_images": int(len(validation))}, overwrite=overwrite)


def _stage_model(model: "LoadedModel", module, spec, index: int) -> "LoadedModel":
    import dataclasses

    return dataclasses.replace(model, source=f"{model.source} (stage {index})", input_spec=spec, module=module,
                               arch=None, task="unknown", labels=None, head=None)


def stage_logits(stages, dataset, spec, threads: int | None = None) -> list[np.ndarray]:
    """Every exit's logits for every image of ``dataset``, running each compiled stage on all of them."""
    from edgeopt.backends import get_backend
    from edgeopt.images import to_input

    sessions = [get_backend(stage.backend).load(stage, threads=threads) for stage in stages]
    per_exit: list[list[np.ndarray]] = [[] for _ in sessions]
    for start in range(0, len(dataset), 64):
        features = to_input(dataset.images[start:start + 64], spec)
        for index, session in enumerate(sessions):
            outputs = session.run([features])
            if index == len(sessions) - 1:
                per_exit[index].append(outputs[0])
            else:
                features = outputs[0]
                per_exit[index].append(outputs[1])
    return [np.concatenate(chunks) for chunks in per_exit]


def exits_taken(confidences: Sequence[np.ndarray], thresholds: Sequence[float]) -> np.ndarray:
    """The exit each row leaves at: the first whose confidence reaches its threshold, else the last."""
    taken = np.full(len(confidences[0]), len(confidences))
    for index in reversed(range(len(thresholds))):
        taken = np.where(confidences[index] >= thresholds[index], index, taken)
    return taken


def outcome(logits: Sequence[np.ndarray], labels: np.ndarray, exit_macs: Sequence[int], full_macs: int,
            thresholds: Sequence[float]) -> tuple[float, float]:
    """(top-1, mean MACs per image as a share of ``full_macs``, the model's without exits) of a threshold setting."""
    confidences = [confidence(l) for l in logits[:-1]]
    taken = exits_taken(confidences, thresholds)
    predictions = np.stack([l.argmax(axis=1) for l in logits])[taken, np.arange(len(labels))]
    macs = np.asarray(exit_macs, float)[taken].mean() / full_macs
    return float((predictions == labels).mean()), float(macs)


def calibrate(logits: Sequence[np.ndarray], labels: np.ndarray, exit_macs: Sequence[int], full_macs: int,
              budgets: Sequence[float]) -> list[Setting]:
    """Settings from accuracy first to fastest: for each budget the cheapest thresholds on ``GRID`` whose top-1
    stays within the budget of never leaving early (shared by every exit first, then refined exit by exit)."""
    early = len(logits) - 1
    if not len(labels):
        raise ConfigError("calibrating the exits needs validation images; the validation split is empty")
    full, _ = outcome(logits, labels, exit_macs, full_macs, (NEVER,) * early)

    def cheapest(budget: float) -> tuple[float, ...]:
        floor = full - budget / 100 - 1e-9
        best, best_macs = (NEVER,) * early, outcome(logits, labels, exit_macs, full_macs, (NEVER,) * early)[1]
        for shared in GRID:
            top1, macs = outcome(logits, labels, exit_macs, full_macs, (shared,) * early)
            if top1 >= floor and macs < best_macs:
                best, best_macs = (shared,) * early, macs
        for _ in range(2):  # exit by exit, twice round
            for index in range(early):
                for value in GRID:
                    trial = best[:index] + (value,) + best[index + 1:]
                    top1, macs = outcome(logits, labels, exit_macs, full_macs, trial)
                    if top1 >= floor and macs < best_macs:
                        best, best_macs = trial, macs
        return best

    named = [("accuracy-first", (NEVER,) * early)]
    named += [(f"max-drop-{budget:g}", cheapest(budget)) for budget in sorted(set(budgets))]
    named.append(("fastest", (0.0,) * early))
    settings = []
    for name, thresholds in named:  # every name kept, even where two settings' thresholds agree
        top1, macs = outcome(logits, labels, exit_macs, full_macs, thresholds)
        settings.append(Setting(name, thresholds, {"top1": round(top1, 6), "mean_macs_share": round(macs, 6)}))
    return settings
