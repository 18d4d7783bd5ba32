"""Build a recipe: apply its passes in order, then export — deterministically, resumably.

Each step's result is cached as a checkpoint named by the hash of the recipe up to that
step, so results that share a pruned or distilled model (the same pruned network
exported to two runtimes, say) train it once, and a killed build resumes from the last
finished epoch (the training loop's own checkpoint). Every step is seeded; on the same
machine with the same thread count a rebuild gives the same weights.

Example:
    >>> context = BuildContext.create(recipe, workdir=Path("out/build"))      # doctest: +SKIP
    >>> model, artifact = build(recipe, context, Path("out/art"))              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import ConfigError
from edgeopt.passes import PassContext
from edgeopt.pipeline.recipe import Recipe
from edgeopt.core.quantization import QuantizationConfig, Validation

if TYPE_CHECKING:
    import numpy as np

    from edgeopt.core.artifact import Artifact
    from edgeopt.tasks.classification.data import DatasetSplits
    from edgeopt.models.sources import LoadedModel
    from edgeopt.tasks import Task

VALIDATION_FRACTION = 0.2  # of the training split, held out from calibration for accuracy-aware INT8


@dataclass
class BuildContext:
    """What every recipe built from one baseline shares: the model, its data and task, a cache folder."""

    baseline: "LoadedModel"
    splits: "DatasetSplits"
    task: "Task"
    workdir: Path
    threads: int | None = None
    show_progress: bool = True
    on_epoch: Callable[[dict[str, float]], None] | None = None
    resume: bool = True

    @classmethod
    def create(cls, recipe: Recipe, workdir: Path, threads: int | None = None, show_progress: bool = True,
               on_epoch: Callable[[dict[str, float]], None] | None = None, resume: bool = True) -> "BuildContext":
        from edgeopt.models.sources import load_model
        from edgeopt.tasks import task_of

        baseline = load_model(recipe.model, arch=recipe.arch, origin=recipe.origin)
        if baseline.module is None:
            raise ConfigError("building a recipe needs a PyTorch model (a checkpoint, torchvision: or package.module:factory "
                              "source); an ONNX file can only be exported and benchmarked")
        task = task_of(baseline)
        if threads:
            import torch

            torch.set_num_threads(threads)
        return cls(baseline, task.load(recipe.data, baseline.input_spec), task, Path(workdir), threads, show_progress,
                   on_epoch, resume)

    def model_path(self, recipe: Recipe, steps: int | None = None) -> Path:
        """Where the model after ``recipe``'s first ``steps`` steps (default: all) is cached."""
        return self.workdir / cached_model_name(recipe, steps)

    def checkpoint_path(self, recipe: Recipe, steps: int) -> Path:
        """Where step ``steps`` (1-based) of ``recipe`` checkpoints its training: beside its cached model."""
        return self.workdir / checkpoint_name(recipe, steps)

    def epochs_left(self, recipe: Recipe) -> int:
        """Training epochs ``recipe``'s model still needs: none after a cached step, less the epochs a
        step's checkpoint holds when resuming."""
        from edgeopt.passes.train import epochs_done

        left = 0
        for steps in range(len(recipe.steps), 0, -1):
            if self.model_path(recipe, steps).is_file():
                break
            done = epochs_done(self.checkpoint_path(recipe, steps)) if self.resume else 0
            left += max(0, recipe.steps[steps - 1].epochs - done)
        return left

    def pass_context(self, recipe: Recipe, steps: int, deadline: Deadline = NO_DEADLINE) -> PassContext:
        """The context of step ``steps`` (1-based): the baseline as teacher, a checkpoint beside its cache."""
        checkpoint = self.checkpoint_path(recipe, steps)
        return PassContext(teacher=self.baseline, splits=self.splits, task=self.task, seed=recipe.seed,
                           checkpoint=checkpoint, resume=self.resume, show_progress=self.show_progress,
                           on_epoch=self.on_epoch, deadline=deadline, origin=recipe.origin)


def cached_model_name(recipe: Recipe, steps: int | None = None) -> Path:
    """The cached model after ``recipe``'s first ``steps`` steps (default: all), relative to a build's folder."""
    count = len(recipe.steps) if steps is None else steps
    return Path("models") / f"{recipe.prefix_hash(count)}.safetensors"


def checkpoint_name(recipe: Recipe, steps: int) -> Path:
    """Step ``steps``' training checkpoint (1-based), beside its cached model, relative to a build's folder."""
    return cached_model_name(recipe, steps).with_suffix(".train.pt")


def build_model(recipe: Recipe, context: BuildContext, deadline: Deadline = NO_DEADLINE) -> "LoadedModel":
    """The PyTorch model after ``recipe``'s steps (cached per step prefix).

    ``deadline`` goes to every step (a fine-tune stops at it, its last epoch checkpointed); a step
    it stops leaves no cached model, so the next build continues that step from its checkpoint.
    """
    import torch

    from edgeopt.models.sources import load_model, save_checkpoint

    model = context.baseline
    for index, step in enumerate(recipe.steps):
        cached = context.model_path(recipe, index + 1)
        technique = step.technique
        if technique.cached and cached.is_file():
            model = load_model(str(cached))
            continue
        torch.manual_seed(recipe.seed)  # a student's initial weights, dropout: the same on every rebuild
        deadline.check(f"step {index + 1} of {len(recipe.steps)}: {step.label}")
        model = technique.apply(model, step.config, context.pass_context(recipe, index + 1, deadline))
        if technique.cached:  # a QAT model is NNCF-wrapped, an early-exit one not its architecture: not cached
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model, cached)
    return model


def build(recipe: Recipe, context: BuildContext, out: Path, overwrite: bool = False,
          verify: bool = True, deadline: Deadline = NO_DEADLINE) -> tuple["LoadedModel", "Artifact"]:
    """Build the model and export it to ``out`` (verified by ``export``; the recipe goes in its manifest).

    ``verify=False``: a latency probe of untrained weights (see ``export``). ``deadline``: the
    training steps, the export and accuracy-aware INT8 stop at it (``BudgetExhausted``).
    """
    from edgeopt.compile import export
    from edgeopt.tasks import task_of

    model = build_model(recipe, context, deadline)
    spec = recipe.export
    calibration, validation = quantization_data(context.splits, task_of(model), model, spec.quantization)
    artifact = export(model, spec.backend, out, spec.precision, threads=context.threads, options=dict(spec.options),
                      overwrite=overwrite, quantization=spec.quantization, calibration=calibration,
                      validation=validation, recipe=recipe.to_dict(), verify=verify, deadline=deadline)
    return model, artifact


def quantization_data(splits: "DatasetSplits", task: "Task", model: "LoadedModel", config: QuantizationConfig | None
                      ) -> tuple["np.ndarray | None", Validation | None]:
    """(calibration inputs, Validation or None) for ``model`` from the training split of ``splits``.

    In mode "aware", a stratified 20% of the training split is held out as labelled
    validation data, scored by the task's main metric, and calibration samples are drawn
    from the rest; the test split is never seen.
    """
    from edgeopt.images import to_input

    if config is None:
        return None, None
    spec, train = model.input_spec, splits.train
    if config.mode != "aware":
        return to_input(train.calibration(config.calibration_samples).images, spec), None
    rest, held_out = train.split(VALIDATION_FRACTION, seed=0)
    metric = task.main

    def score(outputs: list) -> float:
        value = task.score(outputs, held_out)[metric.name]
        return value if metric.higher_is_better else -value

    validation = Validation(to_input(held_out.images, spec), score, config.max_drop, metric.name,
                            metric.points_per_unit)
    return to_input(rest.calibration(config.calibration_samples).images, spec), validation


def seconds_per_epoch(recipe: Recipe, context: BuildContext, probe_steps: int = 2,
                      deadline: Deadline = NO_DEADLINE) -> float:
    """Training time of one epoch of ``recipe``'s last training step, timed on a few batches.

    Used to skip a candidate whose fine-tuning cannot finish inside a search's budget. Itself
    seconds of work on a detector (its model is built, pruned say, then stepped), so it stops at
    ``deadline`` like the training it estimates.
    """
    import torch

    from edgeopt.passes.kd import distillation_loss

    training = [step for step in recipe.steps if step.epochs]
    if not training:
        return 0.0
    settings = training[-1].config.fine_tune
    deadline.check("estimating the fine-tuning time")
    untrained = build_model(recipe.untrained(), context)
    module, spec = copy.deepcopy(untrained.module).train(), untrained.input_spec
    batch = settings.batch_size
    sample = context.splits.train.subset(range(min(batch, len(context.splits.train))))
    inputs, labels = context.task.training_data(sample, spec).batch(torch.arange(len(sample)), None, False)
    teacher = context.baseline
    loss_fn = (distillation_loss(teacher.module, teacher.input_spec.shape, settings.temperature, settings.alpha,
                                 task=context.task)
               if settings.distill else context.task.training_loss())
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-6)
    timings = []
    for step in range(probe_steps + 1):  # the first step warms up allocators and is not counted
        deadline.check("estimating the fine-tuning time, batches", step, probe_steps + 1)
        started = time.perf_counter()
        loss = loss_fn(module, inputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    steps_per_epoch = max(1, int(len(context.splits.train) * (1 - settings.validation_split)) // batch)
    return min(timings[1:]) * steps_per_epoch * 1.15  # + validation pass each epoch
