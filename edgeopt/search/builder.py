"""Build a recipe: apply its PyTorch steps, then export — deterministically, resumably.

Each step's result is cached as a checkpoint named by the hash of the recipe up to that
step, so candidates that share a pruned or distilled model (the same pruned network
exported to two runtimes, say) train it once, and a killed build resumes from the last
finished epoch (the training loop's own checkpoint). Training is seeded; on the same
machine with the same thread count a rebuild gives the same weights.

Example:
    >>> context = BuildContext.create(recipe, workdir=Path("out/search"))         # doctest: +SKIP
    >>> model, artifact = build(recipe, context, Path("out/art"))                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.errors import ConfigError
from edgeopt.search.recipe import Recipe, Step

if TYPE_CHECKING:
    from edgeopt.artifact import Artifact
    from edgeopt.data import DatasetSplits
    from edgeopt.models import LoadedModel

# Fine-tuning recipes that measured best in benchmarks/compression.py (NEU ResNet-18).
PRUNE_TRAIN = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "schedule": "onecycle"}
DISTILL_TRAIN = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "schedule": "onecycle"}
QAT_TRAIN = {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 5e-4, "schedule": "cosine"}
VALIDATION_SPLIT = 0.1  # of the training split, for choosing the best fine-tuning epoch


@dataclass
class BuildContext:
    """What every candidate of one search shares: the baseline, its data, a cache folder."""

    baseline: "LoadedModel"
    splits: "DatasetSplits"
    workdir: Path
    threads: int | None = None
    show_progress: bool = True

    @classmethod
    def create(cls, recipe: Recipe, workdir: Path, threads: int | None = None, show_progress: bool = True) -> "BuildContext":
        from edgeopt.data import dataset_for
        from edgeopt.models import load_model

        baseline = load_model(recipe.model, arch=recipe.arch)
        if baseline.module is None:
            raise ConfigError("optimize needs a PyTorch model (a checkpoint, torchvision: or package.module:factory "
                              "source); an ONNX file can only be exported and benchmarked")
        splits = dataset_for(recipe.data, baseline)
        return cls(baseline, splits, Path(workdir), threads, show_progress)

    def model_path(self, recipe: Recipe, steps: int | None = None) -> Path:
        """Where the model after ``recipe``'s first ``steps`` steps (default: all) is cached."""
        count = len(recipe.steps) if steps is None else steps
        return self.workdir / "models" / f"{recipe.prefix_hash(count)}.safetensors"

    def calibration_and_validation(self, model: "LoadedModel", recipe: Recipe):
        from edgeopt.data import quantization_data

        if recipe.precision == "fp32":
            return None, None
        drop = recipe.max_accuracy_drop if recipe.quantization == "aware" else None
        return quantization_data(self.splits, recipe.calibration_samples, model, drop)


def build_model(recipe: Recipe, context: BuildContext) -> "LoadedModel":
    """The PyTorch model after ``recipe``'s steps (cached per step prefix)."""
    from edgeopt.models import load_model, save_checkpoint

    model = context.baseline
    for index, step in enumerate(recipe.steps):
        cached = context.model_path(recipe, index + 1)
        if step.kind != "qat" and cached.is_file():
            model = load_model(str(cached))
            continue
        model = _apply(step, model, recipe, context, cached.with_suffix(".train.pt"))
        if step.kind != "qat":  # a QAT model is NNCF-wrapped: it is exported, not cached
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model, cached)
    return model


def build(recipe: Recipe, context: BuildContext, out: Path, overwrite: bool = False) -> tuple["LoadedModel", "Artifact"]:
    """Build the model and export it to ``out`` (verified for parity by ``export``)."""
    from edgeopt.export import export

    model = build_model(recipe, context)
    calibration, validation = context.calibration_and_validation(model, recipe)
    artifact = export(model, recipe.backend, out, recipe.precision, threads=context.threads, overwrite=overwrite,
                      calibration=calibration, validation=validation)
    return model, artifact


def _apply(step: Step, model: "LoadedModel", recipe: Recipe, context: BuildContext, checkpoint: Path) -> "LoadedModel":
    import torch

    torch.manual_seed(recipe.seed)
    epochs = int(step.get("epochs") or 0)
    if step.kind == "prune":
        return _prune(step, model, context, epochs, checkpoint, recipe.seed)
    if step.kind == "distill":
        return _distill(step, model, context, epochs, checkpoint, recipe.seed)
    return _qat(model, context, recipe, epochs, checkpoint)


def _train(module, spec, context: BuildContext, epochs: int, settings: dict[str, Any], checkpoint: Path, seed: int,
           teacher=None) -> None:
    """Fine-tune ``module`` in place (distilling from ``teacher`` if given); resumable."""
    if epochs <= 0:
        return
    from edgeopt.passes.distill import DistillConfig, distillation_loss
    from edgeopt.passes.train import TrainConfig, fit

    config = TrainConfig(epochs=epochs, seed=seed, **settings)
    train, val = context.splits.train.split(VALIDATION_SPLIT, seed)
    loss = distillation_loss(teacher, DistillConfig()) if teacher is not None else None
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    fit(module, train, val, spec, config, checkpoint=checkpoint, resume=True, loss_fn=loss,
        show_progress=context.show_progress)


def _prune(step: Step, model: "LoadedModel", context: BuildContext, epochs: int, checkpoint: Path, seed: int):
    import torch

    from edgeopt.passes.prune import PruneConfig, prune_channels

    pruned = dataclasses.replace(model, module=copy.deepcopy(model.module))
    example = torch.from_numpy(model.input_spec.example())
    prune_channels(pruned.module, example, PruneConfig(ratio=float(step.get("ratio"))))
    _train(pruned.module, pruned.input_spec, context, epochs, PRUNE_TRAIN, checkpoint, seed,
           teacher=context.baseline.module)
    return pruned


def _distill(step: Step, model: "LoadedModel", context: BuildContext, epochs: int, checkpoint: Path, seed: int):
    from edgeopt.models import arch_for_dataset, load_model

    spec = model.input_spec
    if step.get("input_size"):
        size = int(step.get("input_size"))
        spec = dataclasses.replace(spec, shape=(*spec.shape[:-2], size, size))
    if step.get("student"):
        classes, channels = len(context.splits.classes), context.splits.train.channels
        student = load_model(arch_for_dataset(step.get("student"), classes, channels), input=spec)
        student.task, student.labels = model.task, model.labels
    else:  # same architecture at a lower resolution, starting from the current weights
        student = dataclasses.replace(model, module=copy.deepcopy(model.module), input_spec=spec)
    _train(student.module, student.input_spec, context, epochs, DISTILL_TRAIN, checkpoint, seed,
           teacher=context.baseline.module)
    return student


def _qat(model: "LoadedModel", context: BuildContext, recipe: Recipe, epochs: int, checkpoint: Path):
    from edgeopt.passes.qat import prepare_qat

    calibration, _ = context.calibration_and_validation(model, dataclasses.replace(recipe, quantization="ptq"))
    prepared = prepare_qat(model, calibration)
    _train(prepared.module, prepared.input_spec, context, epochs, QAT_TRAIN, checkpoint, recipe.seed)
    return prepared


def seconds_per_epoch(recipe: Recipe, context: BuildContext, probe_steps: int = 2) -> float:
    """Training time of one epoch of ``recipe``'s last training step, timed on a few batches.

    Used to skip a candidate whose fine-tuning cannot finish inside the search budget.
    """
    import torch
    import torch.nn.functional as F

    from edgeopt.data import to_input
    from edgeopt.passes.distill import DistillConfig, soft_target_loss

    untrained = build_model(recipe.untrained(), context)
    module, spec = copy.deepcopy(untrained.module).train(), untrained.input_spec
    batch = 64
    sample = context.splits.train.subset(range(min(batch, len(context.splits.train))))
    inputs, labels = torch.from_numpy(to_input(sample.images, spec)), torch.from_numpy(sample.labels)
    teacher_inputs = torch.from_numpy(to_input(sample.images, context.baseline.input_spec))
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-6)
    timings = []
    for _ in range(probe_steps + 1):  # the first step warms up allocators and is not counted
        started = time.perf_counter()
        with torch.no_grad():
            teacher_logits = context.baseline.module(teacher_inputs)
        logits = module(inputs)
        loss = F.cross_entropy(logits, labels) + soft_target_loss(logits, teacher_logits, DistillConfig().temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    steps_per_epoch = max(1, int(len(context.splits.train) * (1 - VALIDATION_SPLIT)) // batch)
    return min(timings[1:]) * steps_per_epoch * 1.15  # + validation pass each epoch

