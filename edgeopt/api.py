"""The Python API: every command of the CLI as a function, with the same defaults.

``train`` · ``prune`` · ``distill`` · ``quantize`` · ``optimize`` · ``build`` · ``bench`` ·
``export``. Each technique runs through the same recipe builder as ``edgeopt build`` and
``edgeopt optimize``; the CLI only parses options and prints what these return. Every
example below runs in the test suite (in a fresh folder, on scikit-learn's digits).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeopt.errors import ConfigError
from edgeopt.measure.record import Measurement
from edgeopt.passes import FineTune
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.quantization import QuantizationConfig
from edgeopt.search import AgentTarget, Goals, SearchConfig, SearchOutcome, SearchSpace, parse_duration

if TYPE_CHECKING:
    from edgeopt.artifact import Artifact
    from edgeopt.models import LoadedModel
    from edgeopt.pipeline.bench import BenchConfig, BenchReport
    from edgeopt.search.events import Event
    from edgeopt.tasks import Task

PathLike = str | os.PathLike


@dataclass
class Trained:
    """A model trained by ``train``: the checkpoint, the model, its test metrics and cost, its history."""

    path: Path
    model: "LoadedModel"
    measurement: Measurement
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Compressed:
    """What ``prune``, ``distill`` and ``quantize`` made: where it is, the recipe that rebuilds it,
    and the before/after Measurements (test metrics, MACs, size, p50 latency at batch 1)."""

    path: Path
    recipe: Recipe
    before: Measurement
    after: Measurement
    model: "LoadedModel | None" = None
    artifact: "Artifact | None" = None
    details: dict[str, Any] = field(default_factory=dict)


def train(data: str, arch: str, out: PathLike, epochs: int = 10, *, lr: float = 0.002, optimizer: str = "adamw",
          schedule: str = "onecycle", weight_decay: float = 0.05, batch_size: int = 64, augment: bool = True,
          patience: int | None = None, val_fraction: float = 0.1, seed: int = 0, resume: bool = False,
          extra_train: Sequence[str] = (), image_size: int | None = None, input_size: int | None = None,
          threads: int | None = None, progress: bool = True, task: str = "classification") -> Trained:
    """Train ``arch`` on ``data`` from scratch; keep the best validation epoch; save a checkpoint.

    Classes and input channels come from the data; ``input_size`` shows the images to the
    model at another square size (the digits' 8x8 scans at 48x48, say). ``task="detection"``
    trains a detector on boxes (a COCO json, a YOLO folder, or the NEU-DET .npz), letterboxed
    to ``input_size`` (default: the images' own size), with ``edgeopt.detectors:ssdlite`` or
    a torchvision SSD. The checkpoint
    carries the architecture, the InputSpec (preprocessing included), the labels and the task.

    >>> import edgeopt
    >>> trained = edgeopt.train("digits", "edgeopt.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                         augment=False, progress=False)
    >>> trained.measurement.metrics["top1"] > 0.85, trained.path.name
    (True, 'digits.safetensors')
    """
    import torch

    from edgeopt.data import input_spec_for, load_dataset
    from edgeopt.models import arch_for_dataset, load_model, save_checkpoint
    from edgeopt.passes.train import TrainConfig, Validator, fit
    from edgeopt.pipeline.evaluate import measure_model
    from edgeopt.tasks import get_task, task_of

    out = Path(out)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, schedule=schedule,
                         weight_decay=weight_decay, augment=augment, patience=patience, seed=seed)
    _threads(threads)
    if task == "detection":
        from edgeopt.detection_data import load_detection

        splits = load_detection(data, size=input_size or image_size, seed=seed)
        size = splits.train.images.shape[1]
        arch = arch_for_dataset(arch, len(splits.classes), splits.train.channels,
                                size=size if arch.startswith("edgeopt.detectors:") else None)
    else:
        splits = load_dataset(data, extra_train=extra_train, image_size=image_size, seed=seed)
        size = input_size
        arch = arch_for_dataset(arch, len(splits.classes), splits.train.channels)
    train_split, val = splits.train.split(val_fraction, seed)
    spec = input_spec_for(splits.train, size=size)
    if task == "detection":  # the loader letterboxed every image: so must serving
        spec = dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, fit="letterbox"))
    torch.manual_seed(seed)
    model = load_model(arch, input=spec)
    model.task, model.labels = get_task(task).name, list(splits.classes)
    bound = task_of(model)
    result = fit(model.module, train_split, val, spec, config, bound.training_loss(), Validator(bound, val, spec),
                 checkpoint=out.with_name(out.name + ".train.pt"), resume=resume, show_progress=progress, task=bound)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out)
    return Trained(out, model, measure_model(model, splits.test, bound, threads), result.best_epoch, result.history)


def prune(model: str, data: str, out: PathLike, ratio: float = 0.5, *, target_macs: int | None = None,
          importance: str = "l2", global_pruning: bool = False, round_to: int = 8, steps: int = 1,
          ignore: Sequence[str] = (), sparsity: float | None = None, fine_tune: FineTune = FineTune(),
          seed: int = 0, arch: str | None = None, threads: int | None = None, resume: bool = True,
          progress: bool = True) -> Compressed:
    """Remove channels (Torch-Pruning) from a trained model, fine-tune it, save it, and compare.

    ``sparsity`` instead zeroes that share of the weights (unstructured: a smaller compressed
    file, no faster). The recipe is written beside ``out`` (``.recipe.toml``), so
    ``edgeopt build`` rebuilds the same weights.

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.zoo:tiny_cnn?width=32", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> pruned = edgeopt.prune("runs/digits.safetensors", "digits", "runs/digits-p50.safetensors", ratio=0.5,
    ...                        fine_tune=edgeopt.FineTune(epochs=1), progress=False)
    >>> pruned.after.macs < pruned.before.macs / 2, pruned.recipe.label
    (True, 'prune 0.5 (1 ep) → eager fp32')
    """
    if sparsity is not None:
        step = Step.of("sparsify", amount=sparsity, fine_tune=dataclasses.asdict(fine_tune))
    else:
        step = Step.of("prune", ratio=ratio, target_macs=target_macs, importance=importance,
                       global_pruning=global_pruning, round_to=round_to, steps=steps, ignore=tuple(ignore),
                       fine_tune=dataclasses.asdict(fine_tune))
    recipe = Recipe(model=model, data=data, steps=(step,), seed=seed, arch=arch)
    result = _build_checkpoint(recipe, Path(out), threads, resume, progress)
    if sparsity is not None:
        from edgeopt.passes.sparsify import sparsity_of

        report = sparsity_of(result.model.module)
        result.details = {"sparsity": report.sparsity, "per_layer": report.per_layer, "note": report.note}
    else:
        result.details = {"protected": _protected(recipe, step)}
    return result


def distill(student: str | None, teacher: str, data: str, out: PathLike, *, input_size: int | None = None,
            hints: Sequence[tuple[str, str]] = (), hint_weight: float = 0.0,
            fine_tune: FineTune = FineTune(lr=0.002), seed: int = 0, threads: int | None = None,
            resume: bool = True, progress: bool = True) -> Compressed:
    """Train ``student`` from ``teacher`` (α·CE + (1−α)·T²·KL, T=3, α=0.7), optionally at a lower resolution.

    ``student``: an architecture source (classes and channels set from the data), a
    checkpoint, or None for the teacher's own architecture (with ``input_size``).

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> small = edgeopt.distill("edgeopt.zoo:tiny_cnn?width=8", "runs/digits.safetensors", "digits",
    ...                         "runs/student.safetensors", fine_tune=edgeopt.FineTune(epochs=1), progress=False)
    >>> small.after.params < small.before.params
    True
    """
    step = Step.of("distill", student=student, input_size=input_size, hints=tuple(tuple(h) for h in hints),
                   hint_weight=hint_weight, fine_tune=dataclasses.asdict(fine_tune))
    return _build_checkpoint(Recipe(model=teacher, data=data, steps=(step,), seed=seed), Path(out), threads,
                             resume, progress)


def quantize(model: str, data: str, backend: str, out: PathLike, *, mode: str = "static",
             max_drop: float | None = None, calibration_samples: int = 300, preset: str = "performance",
             calibration_method: str = "minmax", keep_float: Sequence[str] = (), dynamic: bool = False,
             qat: FineTune | None = None, seed: int = 0, arch: str | None = None, threads: int | None = None,
             force: bool = False, resume: bool = True, progress: bool = True) -> Compressed:
    """INT8 for one backend, compared with eager FP32 on the test split.

    ``mode``: "static" (post-training), "aware" (keeps layers in float until at most
    ``max_drop`` points of the main metric are lost on held-out training images) or "qat"
    (quantization-aware training, ``qat`` says how: 3 epochs of SGD by default).
    ``dynamic``: INT8 weights with activations quantized at run time (ONNX Runtime; no calibration).

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> q = edgeopt.quantize("runs/digits.safetensors", "digits", "onnxruntime", "out/digits-int8",
    ...                      calibration_samples=100, progress=False)
    >>> q.artifact.precision, q.before.metrics["top1"] - q.after.metrics["top1"] < 0.05
    ('int8', True)
    """
    steps: tuple[Step, ...] = ()
    if dynamic:
        export = ExportConfig(backend, "int8-dynamic")
    else:
        if mode == "qat":
            settings = dataclasses.asdict(qat) if qat else {}
            steps = (Step.of("qat", preset=preset, calibration_samples=calibration_samples, fine_tune=settings),)
        export = ExportConfig(backend, "int8", QuantizationConfig(
            mode=mode, max_drop=max_drop, calibration_samples=calibration_samples, preset=preset,
            calibration_method=calibration_method, keep_float=tuple(keep_float)))
    recipe = Recipe(model=model, data=data, steps=steps, export=export, seed=seed, arch=arch)
    return _build_artifact(recipe, Path(out), threads, force, resume, progress)


def optimize(model: str, data: str, out: PathLike = "out/optimize", *, goals: Goals = Goals(),
             device: str = "host", budget: str | float = "30m", space: SearchSpace = SearchSpace(),
             resume: bool = False, force: bool = False, arch: str | None = None, seed: int = 0,
             agent: "AgentTarget | None" = None, sustained_s: float = 60.0, measurements: PathLike | None = None,
             on_event: "Callable[[Event], None] | None" = None) -> SearchOutcome:
    """Search for the fastest (or most accurate, or smallest) artifact of ``model`` that meets ``goals``.

    Measures every candidate on the device when ``agent`` names one (an ``edgeopt agent``), else
    here (a corrected estimate, with its interval, for a device that is not this machine), keeps
    the best so far in ``out/best``, and writes ``report.html``, ``report.md`` and
    ``results.json``. ``on_event`` receives the search's progress (``edgeopt.search.events``).
    ``budget`` is wall-clock from this call and holds inside candidates: a fine-tune, a calibration
    or accuracy-aware INT8 that reaches it stops, and is journaled ``stopped`` (``resume`` with more
    budget builds it again, a fine-tune from its last epoch).

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> space = edgeopt.SearchSpace(backends=("onnxruntime",), prune_ratios=(), resolutions=(), students=(), qat=False)
    >>> outcome = edgeopt.optimize("runs/digits.safetensors", "digits", "out/search", space=space, budget="5m")
    >>> outcome.chosen.meets_goals, (Path("out/search") / "report.html").is_file()
    (True, True)
    """
    from edgeopt.report.search import write_reports
    from edgeopt.search import Search

    seconds = parse_duration(budget) if isinstance(budget, str) else float(budget)
    config = SearchConfig(model=model, data=data, out=Path(out), goals=goals, device=device, budget_s=seconds,
                          space=space, resume=resume, force=force, arch=arch, seed=seed, agent=agent,
                          sustained_s=sustained_s, measurements=Path(measurements) if measurements else None)
    outcome = Search(config, on_event=on_event).run()
    write_reports(outcome, config.out)
    return outcome


def build(recipe: "Recipe | PathLike", out: PathLike, *, workdir: PathLike | None = None, force: bool = False,
          threads: int | None = None, progress: bool = True) -> "Artifact":
    """Rebuild a recipe (a ``Recipe`` or a recipe.toml from ``optimize``, ``prune``…): same seed, same weights.

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> recipe = edgeopt.Recipe("runs/digits.safetensors", "digits", export=edgeopt.ExportConfig("openvino"))
    >>> edgeopt.build(recipe, "out/digits-ov", progress=False).backend
    'openvino'
    """
    from edgeopt.pipeline.builder import BuildContext
    from edgeopt.pipeline.builder import build as build_recipe

    plan = recipe if isinstance(recipe, Recipe) else Recipe.read(recipe)
    out = Path(out)
    context = BuildContext.create(plan, Path(workdir) if workdir else out.with_name(out.name + ".build"), threads,
                                  show_progress=progress)
    return build_recipe(plan, context, out, overwrite=force)[1]


def bench(model: "str | LoadedModel", config: "BenchConfig | None" = None, *, calibrate: str | None = None,
          calibration_samples: int = 300, artifacts_dir: PathLike | None = None, input: str | None = None,
          arch: str | None = None, progress: Callable[[str, str], None] | None = None) -> "BenchReport":
    """Compile ``model`` for every backend (or ``config.backends``), verify each, time each in its own process.

    >>> import edgeopt
    >>> config = edgeopt.BenchConfig(backends=("eager", "onnxruntime"), timing=edgeopt.TimingConfig(min_seconds=0.2))
    >>> report = edgeopt.bench("edgeopt.zoo:tiny_cnn", config, input="1x3x32x32")
    >>> [(r.backend, r.status) for r in report.results]
    [('eager', 'ok'), ('onnxruntime', 'ok')]
    """
    from edgeopt.pipeline.bench import BenchConfig
    from edgeopt.pipeline.bench import bench as run_bench

    loaded = _load(model, input, arch)
    calibration = _calibration(loaded, calibrate, QuantizationConfig(calibration_samples=calibration_samples))[0]
    return run_bench(loaded, config or BenchConfig(), artifacts_dir, progress, calibration)


def export(model: "str | LoadedModel", backend: str, out: PathLike, precision: str = "fp32", *,
           calibrate: str | None = None, quantization: QuantizationConfig | None = None,
           options: dict[str, Any] | None = None, input: str | None = None, arch: str | None = None,
           threads: int | None = None, force: bool = False, outputs: str | None = None,
           labels: Sequence[str] | None = None) -> "Artifact":
    """Compile ``model`` for ``backend``, load it back, check it against the FP32 reference, write the artifact.

    INT8 calibrates on ``calibrate`` (a dataset: digits, an .npz, an ImageFolder tree; boxes for a
    detector); a ``quantization`` in mode "aware" holds out part of its training split to keep the drop.
    ``outputs``: a detector edgeopt did not build (an ONNX YOLO, say) declares its output layout,
    ``yolov8`` or ``yolov5``, with its class ``labels``; the artifact then decodes its own boxes.

    >>> import edgeopt
    >>> artifact = edgeopt.export("edgeopt.zoo:tiny_cnn", "onnxruntime", "out/tiny-ort", input="1x3x32x32")
    >>> artifact.parity["passed"], artifact.parity["max_abs_diff"] < 1e-3
    (True, True)
    """
    from edgeopt.compile import export as compile_and_verify

    loaded = _load(model, input, arch)
    if outputs is not None:
        from edgeopt.models import declare_detector

        loaded = declare_detector(loaded, outputs, list(labels) if labels else None)
    if precision == "int8":
        quantization = quantization or QuantizationConfig()
    calibration, validation = _calibration(loaded, calibrate, quantization)
    return compile_and_verify(loaded, backend, out, precision, threads=threads, options=options, overwrite=force,
                              quantization=quantization, calibration=calibration, validation=validation)


def evaluate(model: str, data: str, *, reference: str | None = None, image_size: int | None = None,
             arch: str | None = None) -> dict[str, Any]:
    """The task's metrics and details of an artifact folder or a model source on ``data``'s test split;
    with ``reference`` (a model source), fidelity to it too.

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> report = edgeopt.evaluate("runs/digits.safetensors", "digits")
    >>> sorted(report["metrics"]), report["samples"]
    (['top1', 'top5'], 359)
    """
    from edgeopt.artifact import MANIFEST, Artifact
    from edgeopt.backends import open_session
    from edgeopt.measure.inference import predict
    from edgeopt.models import load_model

    if (Path(model) / MANIFEST).is_file():
        artifact = Artifact.open(model)
        run, spec, task = open_session(artifact.path).run, artifact.input_spec, _task_of(artifact)
    else:
        loaded = load_model(model, arch=arch)
        run, spec, task = loaded.reference(), loaded.input_spec, _task_of(loaded)
    test = (task.load(data, spec) if image_size is None else _load_at(data, image_size)).test
    outputs = predict(run, test, spec)
    report: dict[str, Any] = {"metrics": task.score(outputs, test), **task.details(outputs, test)}
    if reference is not None:
        other = load_model(reference)
        report["fidelity"] = task.fidelity(predict(other.reference(), test, other.input_spec), outputs)
    return report


def _load_at(data: str, image_size: int):
    from edgeopt.data import load_dataset

    return load_dataset(data, image_size=image_size)


# -- shared by the functions above -----------------------------------------------------------
def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _load(model: "str | LoadedModel", input: str | None, arch: str | None) -> "LoadedModel":
    from edgeopt.models import load_model

    return load_model(model, input=input, arch=arch) if isinstance(model, str) else model


def _calibration(model: "LoadedModel", data: str | None, config: QuantizationConfig | None):
    """(calibration, validation) from the dataset ``data`` for ``model`` (None, None without data)."""
    from edgeopt.pipeline.builder import quantization_data

    if data is None:
        if config is not None and config.mode == "aware":
            raise ConfigError("a max accuracy drop needs labelled data to hold it on: give a dataset to calibrate on")
        return None, None
    task = _task_of(model)
    return quantization_data(task.load(data, model.input_spec), task, model, config or QuantizationConfig())


def _task_of(model: Any) -> "Task":
    """The task of a model or artifact; one edgeopt did not train is scored on labelled images: classification."""
    from edgeopt.tasks import get_task, task_of

    known = model.manifest.get("task") if hasattr(model, "manifest") else model.task
    return task_of(model) if known not in (None, "unknown") else get_task("classification")


def _context(recipe: Recipe, workdir: Path, threads: int | None, resume: bool, progress: bool):
    from edgeopt.pipeline.builder import BuildContext

    return BuildContext.create(recipe, workdir, threads, show_progress=progress, resume=resume)


def _build_checkpoint(recipe: Recipe, out: Path, threads: int | None, resume: bool, progress: bool) -> Compressed:
    """Build ``recipe``'s PyTorch model, save it at ``out`` with its recipe beside it, measure before and after."""
    from edgeopt.models import save_checkpoint
    from edgeopt.pipeline.builder import build_model
    from edgeopt.pipeline.evaluate import measure_model

    context = _context(recipe, out.with_name(out.name + ".build"), threads, resume, progress)
    built = build_model(recipe, context)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(built, out)
    recipe.write(out.with_suffix(".recipe.toml"))
    test = context.splits.test
    return Compressed(out, recipe, measure_model(context.baseline, test, context.task, threads),
                      measure_model(built, test, _task_of(built), threads), model=built)


def _build_artifact(recipe: Recipe, out: Path, threads: int | None, force: bool, resume: bool,
                    progress: bool) -> Compressed:
    """Build ``recipe`` into the artifact ``out`` and compare it with the baseline in eager FP32."""
    from edgeopt.pipeline.builder import build as build_recipe
    from edgeopt.pipeline.evaluate import measure_artifact, measure_model

    context = _context(recipe, out.with_name(out.name + ".build"), threads, resume, progress)
    artifact = _finished(out, recipe) if resume and not force else None
    if artifact is None:  # a run killed after its artifact was committed resumes by keeping it
        _, artifact = build_recipe(recipe, context, out, overwrite=force)
    test, task = context.splits.test, context.task
    return Compressed(out, recipe, measure_model(context.baseline, test, task, threads),
                      measure_artifact(artifact, test, _task_of(artifact), threads, reference=context.baseline),
                      artifact=artifact)


def _finished(out: Path, recipe: Recipe) -> "Artifact | None":
    """The artifact already at ``out`` when it is whole and was built from ``recipe``; else None."""
    from edgeopt.artifact import Artifact
    from edgeopt.errors import ArtifactError

    if not out.is_dir():
        return None
    try:
        artifact = Artifact.open(out)
    except ArtifactError:
        return None
    return artifact if artifact.manifest.get("recipe") == json.loads(json.dumps(recipe.to_dict())) else None


def _protected(recipe: Recipe, step: Step) -> list[str]:
    """The layers the prune step kept whole (those producing the outputs, and any it was told to ignore)."""
    import torch

    from edgeopt.models import load_model
    from edgeopt.passes.prune import protected_layers

    baseline = load_model(recipe.model, arch=recipe.arch)
    return protected_layers(baseline.module, torch.from_numpy(baseline.input_spec.example()), step.config)
