"""The Python API: every command of the CLI as a function, with the same defaults.

``train`` · ``prune`` · ``distill`` · ``quantize`` · ``optimize`` · ``build`` · ``bench`` ·
``export``. Each technique runs through the same recipe builder as ``edgeopt build`` and
``edgeopt optimize``; the CLI only parses options and prints what these return. A technique
takes its pass's own config (``PruneConfig``, ``DistillConfig``, ``QuantizationConfig`` …: the one
place its defaults live, which the CLI's options read too); run-level options (seed, threads,
progress, resume, force, arch) are keywords. Every example below runs in the test suite (in a
fresh folder, on scikit-learn's digits).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeopt.core.errors import ConfigError
from edgeopt.measure.measurement import Measurement
from edgeopt.passes import FineTune
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.core.quantization import QuantizationConfig
from edgeopt.search import AgentTarget, Goals, SearchConfig, SearchOutcome, SearchSpace, parse_duration

if TYPE_CHECKING:
    from edgeopt.core.exits import StagedExits
    from edgeopt.search.executor import ClusterConfig
    from edgeopt.federated.settings import FederationSettings
    from edgeopt.core.size import SizeLike
    from edgeopt.core.ladder import Ladder
    from edgeopt.passes.early_exit import EarlyExitConfig
    from edgeopt.pipeline.exits import ExitsConfig
    from edgeopt.pipeline.ladder import LadderConfig
    from edgeopt.core.artifact import Artifact
    from edgeopt.models.sources import LoadedModel
    from edgeopt.passes import PassConfig
    from edgeopt.passes.distill import DistillConfig
    from edgeopt.passes.prune import PruneConfig
    from edgeopt.passes.sparsify import SparsifyConfig
    from edgeopt.pipeline.bench import BenchConfig, BenchReport
    from edgeopt.search.events import Event
    from edgeopt.tasks import Task

PathLike = str | os.PathLike
# Continue an interrupted run only when asked: every command's --resume, and every function here.
RESUME = False


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
          patience: int | None = None, val_fraction: float = 0.1, seed: int = 0, resume: bool = RESUME,
          extra_train: Sequence[str] = (), image_size: int | None = None, input_size: "SizeLike | None" = None,
          threads: int | None = None, progress: bool = True, task: str = "classification") -> Trained:
    """Train ``arch`` on ``data`` from scratch; keep the best validation epoch; save a checkpoint.

    Classes and input channels come from the data; ``input_size`` shows the images to the
    model at another size: a side (the digits' 8x8 scans at 48x48, say) or ``"WxH"`` (a camera's 320x240). ``task="detection"``
    trains a detector on boxes (a COCO json, a YOLO folder, or the NEU-DET .npz), letterboxed
    to ``input_size`` (default: the images' own size), with ``edgeopt.models.detectors:ssdlite`` or
    a torchvision SSD. The checkpoint
    carries the architecture, the InputSpec (preprocessing included), the labels and the task.

    >>> import edgeopt
    >>> trained = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                         augment=False, progress=False)
    >>> trained.measurement.metrics["top1"] > 0.85, trained.path.name
    (True, 'digits.safetensors')
    """
    import torch

    from edgeopt.models.sources import arch_for_dataset, load_model, save_checkpoint
    from edgeopt.passes.train import TrainConfig, Validator, fit
    from edgeopt.pipeline.evaluate import measure_model
    from edgeopt.tasks import get_task, task_of

    out = Path(out)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, schedule=schedule,
                         weight_decay=weight_decay, augment=augment, patience=patience, seed=seed)
    _threads(threads)
    kind = get_task(task)  # the task loads the data and shapes the new model's input and outputs
    splits = kind.training_splits(data, image_size=image_size, input_size=input_size, seed=seed,
                                  extra_train=tuple(extra_train))
    spec = kind.new_input(splits, input_size)
    arch = arch_for_dataset(arch, **kind.arch_settings(arch, splits, spec))
    train_split, val = splits.train.split(val_fraction, seed)
    torch.manual_seed(seed)
    model = load_model(arch, input=spec)
    model.task, model.labels = kind.name, list(splits.classes)
    bound = task_of(model)
    result = fit(model.module, train_split, val, spec, config, bound.training_loss(), Validator(bound, val, spec),
                 checkpoint=out.with_name(out.name + ".train.pt"), resume=resume, show_progress=progress, task=bound)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out)
    return Trained(out, model, measure_model(model, splits.test, bound, threads), result.best_epoch, result.history)


def prune(model: str, data: str, out: PathLike, config: "PruneConfig | SparsifyConfig | None" = None, *,
          seed: int = 0, arch: str | None = None, threads: int | None = None, resume: bool = RESUME,
          progress: bool = True) -> Compressed:
    """Remove channels (Torch-Pruning) from a trained model as ``config`` says, fine-tune it, save it, and compare.

    ``config``: a ``PruneConfig`` (None: its defaults, half the channels and 15 epochs of
    distillation), or a ``SparsifyConfig`` to zero a share of the weights instead (unstructured:
    a smaller compressed file, no faster). The recipe is written beside ``out``
    (``.recipe.toml``), so ``edgeopt build`` rebuilds the same weights.

    >>> import edgeopt
    >>> from edgeopt.passes.prune import PruneConfig
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn?width=32", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> pruned = edgeopt.prune("runs/digits.safetensors", "digits", "runs/digits-p50.safetensors",
    ...                        PruneConfig(ratio=0.5, fine_tune=edgeopt.FineTune(epochs=1)), progress=False)
    >>> pruned.after.macs < pruned.before.macs / 2, pruned.recipe.label
    (True, 'prune 0.5 (1 ep) → eager fp32')
    """
    from edgeopt.passes.prune import PruneConfig
    from edgeopt.passes.sparsify import SparsifyConfig

    step = _step(PruneConfig() if config is None else config, "prune", "sparsify")
    recipe = Recipe(model=model, data=data, steps=(step,), seed=seed, arch=arch)
    result = _build_checkpoint(recipe, Path(out), threads, resume, progress)
    if isinstance(step.config, SparsifyConfig):
        from edgeopt.passes.sparsify import sparsity_of

        report = sparsity_of(result.model.module)
        result.details = {"sparsity": report.sparsity, "per_layer": report.per_layer, "note": report.note}
    else:
        result.details = {"protected": _protected(recipe, step)}
    return result


def distill(teacher: str, data: str, out: PathLike, config: "DistillConfig | None" = None, *, seed: int = 0,
            arch: str | None = None, threads: int | None = None, resume: bool = RESUME,
            progress: bool = True) -> Compressed:
    """Train ``config.student`` from ``teacher`` (α·CE + (1−α)·T²·KL, T=3, α=0.7), maybe at a lower resolution.

    ``config``: a ``DistillConfig`` — its ``student`` an architecture source (classes and
    channels set from the data), a checkpoint, or None for the teacher's own architecture (with
    ``input_size``); None: its defaults.

    >>> import edgeopt
    >>> from edgeopt.passes.distill import DistillConfig
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> student = DistillConfig(student="edgeopt.models.zoo:tiny_cnn?width=8", fine_tune=edgeopt.FineTune(epochs=1))
    >>> small = edgeopt.distill("runs/digits.safetensors", "digits", "runs/student.safetensors", student,
    ...                         progress=False)
    >>> small.after.params < small.before.params
    True
    """
    from edgeopt.passes.distill import DistillConfig

    step = _step(DistillConfig() if config is None else config, "distill")
    return _build_checkpoint(Recipe(model=teacher, data=data, steps=(step,), seed=seed, arch=arch), Path(out),
                             threads, resume, progress)


def early_exits(model: str, data: str, out: PathLike, config: "EarlyExitConfig | None" = None,
                build: "ExitsConfig | None" = None, *, seed: int = 0, arch: str | None = None,
                threads: int | None = None, resume: bool = RESUME, progress: bool = True) -> "StagedExits":
    """Exit heads after the stages of a trained classifier (``config``), trained by distillation from its final
    head, compiled stage by stage and calibrated (``build``: runtime, accuracy budgets) into the staged model
    ``out``, whose settings run from accuracy first to fastest.

    >>> import edgeopt
    >>> from edgeopt.passes.early_exit import EarlyExitConfig
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn?width=32", "runs/digits.safetensors", epochs=4,
    ...                   lr=0.01, augment=False, progress=False)
    >>> staged = edgeopt.early_exits("runs/digits.safetensors", "digits", "runs/digits-exits",
    ...                              EarlyExitConfig(fine_tune=edgeopt.FineTune(epochs=1)), progress=False)
    >>> [s.name for s in staged.settings][0], len(staged.stages) > 1
    ('accuracy-first', True)
    """
    from edgeopt.passes.early_exit import EarlyExitConfig
    from edgeopt.pipeline.builder import build_model
    from edgeopt.pipeline.exits import ExitsConfig, build_exits
    from edgeopt.runtime.exits import time_settings

    config = config or EarlyExitConfig()
    recipe = Recipe(model=model, data=data, steps=(_step(config, "early_exit"),), seed=seed, arch=arch)
    out = Path(out)
    context = _context(recipe, out.with_name(out.name + ".build"), threads, resume, progress)
    built = build_model(recipe, context)
    _, validation = context.splits.train.split(config.fine_tune.validation_split, seed)  # what the heads did not train on
    build = build or ExitsConfig(threads=threads)
    timer = functools.partial(time_settings, batches=build.batches, timing=build.timing, threads=build.threads)
    return build_exits(built, validation, out, build, timer=timer, overwrite=True)


def ladder(out: PathLike, artifacts: Sequence[PathLike], *, data: str | None = None,
           config: "LadderConfig | None" = None, force: bool = False) -> "Ladder":
    """Measure ``artifacts`` (one model's, same input) and write the rungs worth having, most accurate first, as a
    ladder for ``edgeopt serve --target-p99-ms`` and ``edgeopt stream --target-ms``."""
    from edgeopt.pipeline.ladder import LadderConfig, assemble

    return assemble(out, [str(a) for a in artifacts], data=data, config=config or LadderConfig(), overwrite=force)[0]


@dataclass
class Federated:
    """What ``federate`` made: the run's state (rounds, history), the global model's checkpoint, and,
    when a recipe was given, the verified artifact built from it and the repository version it became."""

    state: Any
    checkpoint: Path
    artifact: "Artifact | None" = None
    published: Path | None = None


def federate(settings: "FederationSettings", *, address: str = "127.0.0.1:9092", resume: bool = RESUME,
             recipe: "Recipe | PathLike | None" = None, repository: PathLike | None = None, name: str = "model",
             threads: int | None = None, progress: bool = True,
             on_round: Callable[[dict], None] | None = None) -> Federated:
    """Federated fine-tuning on Flower, then back to the device: the SuperLink on ``address`` runs
    ``settings.rounds`` rounds with the sites that join it (``edgeopt federate client``); the global
    model is checkpointed after every round under ``settings.out`` (``resume`` continues there).

    With ``recipe`` (a recipe.toml from ``optimize``, ``prune``…, or a ``Recipe``) the final global
    model is built through it (its training and calibration on ``settings.data``, the server's own
    data, or the recipe's), verified like every artifact, and, with ``repository``, published there as
    ``name``'s next version: a server watching that repository swaps it in.
    """
    from edgeopt.federated.coordinator import coordinate
    from edgeopt.federated.processes import Address
    from edgeopt.serve.repository import check_name

    # everything that can be wrong with what comes after the rounds is found before them
    if repository is not None and recipe is None:
        raise ConfigError("publishing needs a recipe (or --backend) that builds the artifact to publish")
    plan = None if recipe is None else recipe if isinstance(recipe, Recipe) else Recipe.read(recipe)
    if plan is not None and not (settings.data or plan.data):
        raise ConfigError("building the federated model needs the server's own data (--data) for calibration and scores")
    if repository is not None:
        check_name(name)
    state = coordinate(settings, Address.parse(address), resume=resume, on_round=on_round)
    out = Path(settings.out)
    result = Federated(state, state.model_path(out))
    if plan is None:
        return result
    plan = dataclasses.replace(plan, model=str(result.checkpoint), data=settings.data or plan.data, arch=None)
    result.artifact = build(plan, out / "artifact", force=True, threads=threads, progress=progress)
    if repository is not None:
        from edgeopt.serve.repository import publish_version

        result.published = publish_version(Path(repository), name, out / "artifact")
    return result


def quantize(model: str, data: str, backend: str, out: PathLike, config: QuantizationConfig | None = None, *,
             qat: FineTune | None = None, dynamic: bool = False, seed: int = 0, arch: str | None = None,
             threads: int | None = None, force: bool = False, resume: bool = RESUME,
             progress: bool = True) -> Compressed:
    """INT8 for one backend as ``config`` says, compared with eager FP32 on the test split.

    ``config``: a ``QuantizationConfig`` (None: its defaults, static post-training INT8) — its
    ``mode`` "static", "aware" (keeps layers in float until at most ``max_drop`` points of the
    main metric are lost on held-out training images) or "qat" (quantization-aware training
    first, with the config's preset and calibration size; ``qat`` says how it trains, None:
    ``QatConfig``'s 3 epochs of SGD). ``dynamic``: INT8 weights with activations quantized at
    run time (ONNX Runtime; no calibration, so no ``config``).

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> q = edgeopt.quantize("runs/digits.safetensors", "digits", "onnxruntime", "out/digits-int8",
    ...                      edgeopt.QuantizationConfig(calibration_samples=100), progress=False)
    >>> q.artifact.precision, q.before.metrics["top1"] - q.after.metrics["top1"] < 0.05
    ('int8', True)
    """
    from edgeopt.passes.qat import QatConfig

    if dynamic and config is not None:
        raise ConfigError("dynamic INT8 calibrates nothing: give it no QuantizationConfig")
    if not dynamic and config is None:
        config = QuantizationConfig()
    if qat is not None and (config is None or config.mode != "qat"):
        raise ConfigError("QAT fine-tuning settings apply to a QuantizationConfig in mode qat")
    steps: tuple[Step, ...] = ()
    if config is not None and config.mode == "qat":
        settings = {"fine_tune": qat} if qat is not None else {}
        steps = (_step(QatConfig(preset=config.preset, calibration_samples=config.calibration_samples, **settings),
                       "qat"),)
    export = ExportConfig(backend, "int8", config) if config is not None else ExportConfig(backend, "int8-dynamic")
    recipe = Recipe(model=model, data=data, steps=steps, export=export, seed=seed, arch=arch)
    return _build_artifact(recipe, Path(out), threads, force, resume, progress)


def optimize(model: str, data: str, out: PathLike = "out/optimize", *, goals: Goals = Goals(),
             device: str = SearchConfig.device, budget: str | float = SearchConfig.budget_s,
             space: SearchSpace = SearchSpace(), resume: bool = RESUME, force: bool = False, arch: str | None = None,
             seed: int = 0, agent: "AgentTarget | None" = None, sustained_s: float = SearchConfig.sustained_s,
             measurements: PathLike | None = None, ladder: int = 0, cluster: "ClusterConfig | None" = None,
             farm: Sequence["AgentTarget"] = (),
             on_event: "Callable[[Event], None] | None" = None) -> SearchOutcome:
    """Search for the fastest (or most accurate, or smallest) artifact of ``model`` that meets ``goals``.

    Measures every candidate on the device when ``agent`` names one (an ``edgeopt agent``), else
    here (a corrected estimate, with its interval, for a device that is not this machine), keeps
    the best so far in ``out/best``, and writes ``report.html``, ``report.md`` and
    ``results.json``. ``on_event`` receives the search's progress (``edgeopt.search.events``).
    ``budget`` is wall-clock from this call and holds inside candidates: a fine-tune, a calibration
    or accuracy-aware INT8 that reaches it stops, and is journaled ``stopped`` (``resume`` with more
    budget builds it again, a fine-tune from its last epoch). ``ladder``: also write ``out/ladder``, up to that
    many rungs from the Pareto front (the choice, then faster candidates that are a real speed step), for
    ``edgeopt serve --target-p99-ms``. ``cluster``: build the candidates on a Ray cluster (``edgeopt[ray]``;
    ``edgeopt.search.ClusterConfig("auto")``), several at once; they are judged and timed here, as without one.
    ``farm``: more devices' agents beside ``agent``; every candidate is timed on all of them at once, the one
    ``device`` names (an agent's name) decides, and the report shows each device's latencies and choice.

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> space = edgeopt.SearchSpace(backends=("onnxruntime",), prune_ratios=(), resolutions=(), students=(), qat=False)
    >>> outcome = edgeopt.optimize("runs/digits.safetensors", "digits", "out/search", space=space, budget="5m")
    >>> outcome.chosen.meets_goals, (Path("out/search") / "report.html").is_file()
    (True, True)
    """
    from edgeopt.report.search import write_reports
    from edgeopt.search import Search

    from edgeopt.core.ladder import MAX_RUNGS

    if not 0 <= ladder <= MAX_RUNGS:  # checked now, not after hours of search
        raise ConfigError(f"--ladder takes 0 (none) to {MAX_RUNGS} rungs, not {ladder}")
    seconds = parse_duration(budget) if isinstance(budget, str) else float(budget)
    config = SearchConfig(model=model, data=data, out=Path(out), goals=goals, device=device, budget_s=seconds,
                          space=space, resume=resume, force=force, arch=arch, seed=seed, agent=agent,
                          sustained_s=sustained_s, measurements=Path(measurements) if measurements else None,
                          cluster=cluster, farm=tuple(farm))
    outcome = Search(config, on_event=on_event).run()
    write_reports(outcome, config.out)
    if ladder:
        _ladder_from(outcome, config.out, ladder)
    return outcome


def _ladder_from(outcome: SearchOutcome, out: Path, rungs: int) -> None:
    """``out/ladder`` from the search's front (nothing when nothing was chosen), its rungs timed per batch size."""
    from edgeopt.core.artifact import Artifact
    from edgeopt.core.ladder import check_interchangeable
    from edgeopt.pipeline.ladder import LadderConfig, assemble

    import shutil

    shutil.rmtree(out / "ladder", ignore_errors=True)  # an earlier run's ladder is not this one's
    candidates = [c for c in outcome.ladder_candidates() if (out / c.artifact).is_dir()]
    if not candidates:
        return
    chosen = Artifact.open(out / candidates[0].artifact)
    usable = []
    for candidate in candidates:  # a lower resolution takes another input: it cannot share the choice's ladder
        try:
            check_interchangeable([chosen, Artifact.open(out / candidate.artifact)], "the ladder")
        except ConfigError:
            continue
        usable.append(candidate)
    assemble(out / "ladder", [out / c.artifact for c in usable], qualities=[c.measurement.metrics for c in usable],
             config=LadderConfig(max_rungs=rungs, threads=candidates[0].measurement.threads), overwrite=True)


def build(recipe: "Recipe | PathLike", out: PathLike, *, workdir: PathLike | None = None, force: bool = False,
          threads: int | None = None, progress: bool = True) -> "Artifact":
    """Rebuild a recipe (a ``Recipe`` or a recipe.toml from ``optimize``, ``prune``…): same seed, same weights.

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
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
          quantization: QuantizationConfig | None = None, artifacts_dir: PathLike | None = None,
          input: str | None = None, arch: str | None = None,
          progress: Callable[[str, str], None] | None = None) -> "BenchReport":
    """Compile ``model`` for every backend (or ``config.backends``), verify each, time each in its own process.

    INT8 calibrates on ``calibrate`` (a dataset), as many images as ``quantization`` says (None:
    ``QuantizationConfig``'s defaults).

    >>> import edgeopt
    >>> config = edgeopt.BenchConfig(backends=("eager", "onnxruntime"), timing=edgeopt.TimingConfig(min_seconds=0.2))
    >>> report = edgeopt.bench("edgeopt.models.zoo:tiny_cnn", config, input="1x3x32x32")
    >>> [(r.backend, r.status) for r in report.results]
    [('eager', 'ok'), ('onnxruntime', 'ok')]
    """
    from edgeopt.pipeline.bench import BenchConfig
    from edgeopt.pipeline.bench import bench as run_bench

    loaded = _load(model, input, arch)
    calibration = _calibration(loaded, calibrate, quantization or QuantizationConfig())[0]
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
    >>> artifact = edgeopt.export("edgeopt.models.zoo:tiny_cnn", "onnxruntime", "out/tiny-ort", input="1x3x32x32")
    >>> artifact.parity["passed"], artifact.parity["max_abs_diff"] < 1e-3
    (True, True)
    """
    from edgeopt.compile import export as compile_and_verify

    loaded = _load(model, input, arch)
    if outputs is not None:
        from edgeopt.models.sources import declare_detector

        loaded = declare_detector(loaded, outputs, list(labels) if labels else None)
    if precision == "int8":
        quantization = quantization or QuantizationConfig()
    calibration, validation = _calibration(loaded, calibrate, quantization)
    return compile_and_verify(loaded, backend, out, precision, threads=threads, options=options, overwrite=force,
                              quantization=quantization, calibration=calibration, validation=validation)


@dataclass
class Adapted:
    """What ``adapt_batchnorm`` made: the checkpoint, how many layers and images, and the top metric on the
    data's test split before and after (None when the data has no test split)."""

    checkpoint: Path
    layers: int
    images: int
    metric: str
    before: float | None
    after: float | None


def adapt_batchnorm(model: PathLike, data: str, out: PathLike, *, batch_size: int = 64, arch: str | None = None,
                    threads: int | None = None) -> Adapted:
    """A site's own BatchNorm statistics for ``model`` (a PyTorch checkpoint): measured on the training images
    of ``data``, every weight as it came (AdaBN). For a site whose images differ from what the model was trained
    on (a federation's global model at a plant whose camera changed): benchmarks/federated.py measures it. No
    training: the labels are not used, except that the test split, when ``data`` has one, scores the model
    before and after with the task's main metric. ``out`` is a new file; ``model`` stays as it came.

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> adapted = edgeopt.adapt_batchnorm("runs/digits.safetensors", "digits", "runs/digits-adapted.safetensors")
    >>> adapted.layers > 0, adapted.images > 0
    (True, True)
    """
    from edgeopt.federated.statistics import adapt, adaptable_layers
    from edgeopt.models.sources import save_checkpoint
    from edgeopt.passes.train import score_module

    out = _new_checkpoint_path(Path(out), Path(model))
    if batch_size < 2:
        raise ConfigError(f"--batch-size must be 2 or more (BatchNorm needs two values per channel), not {batch_size}")
    _threads(threads)
    loaded = _load(str(model), None, arch)
    if loaded.module is None:
        raise ConfigError(f"{model} is not a PyTorch model: adapting BatchNorm statistics needs the checkpoint "
                          "(.safetensors from edgeopt train or federate), not an exported artifact")
    adaptable_layers(loaded.module)  # before reading the data: a model without BatchNorm is refused at once
    task = _task_of(loaded)
    splits = task.load(data, loaded.input_spec)
    metric = task.main.name

    def score() -> float | None:
        return float(score_module(loaded.module, splits.test, loaded.input_spec, task)[metric]) if len(splits.test) else None

    before = score()
    layers = adapt(loaded, splits.train.images, batch_size)
    after = score()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = save_checkpoint(loaded, out)
    except OSError as exc:
        out.with_name(out.name + ".partial").unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}; choose a writable --out") from None
    return Adapted(written, layers, len(splits.train), metric, before, after)


def _new_checkpoint_path(out: Path, source: Path) -> Path:
    """``out`` checked before any work: a file path (not a folder), not the source model itself."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give the path of the checkpoint to write (e.g. {out}/adapted.safetensors)")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ConfigError(f"--out is the model itself ({source}): give another path, so the model stays as it came")
    return out


def evaluate(model: str, data: str, *, reference: str | None = None, image_size: int | None = None,
             arch: str | None = None, predictions: bool = False, score_threshold: float = 0.3) -> dict[str, Any]:
    """The task's metrics and details of an artifact folder or a model source on ``data``'s test split;
    with ``reference`` (a model source), fidelity to it too; with ``predictions``, every test image's
    result as ``predict`` writes it (boxes over ``score_threshold``, in the image's pixels), in order.

    >>> import edgeopt
    >>> _ = edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn", "runs/digits.safetensors", epochs=4, lr=0.01,
    ...                   augment=False, progress=False)
    >>> report = edgeopt.evaluate("runs/digits.safetensors", "digits")
    >>> sorted(report["metrics"]), report["samples"]
    (['top1', 'top5'], 359)
    """
    from edgeopt.core.artifact import MANIFEST, Artifact
    from edgeopt.backends import open_session
    from edgeopt.measure.inference import outputs_on
    from edgeopt.models.sources import load_model

    if (Path(model) / MANIFEST).is_file():
        artifact = Artifact.open(model)
        run, spec, task = open_session(artifact.path).run, artifact.input_spec, _task_of(artifact)
        labels = artifact.manifest.get("labels")
    else:
        loaded = load_model(model, arch=arch)
        run, spec, task = loaded.reference(), loaded.input_spec, _task_of(loaded)
        labels = loaded.labels
    test = (task.load(data, spec) if image_size is None else _load_at(data, image_size)).test
    outputs = outputs_on(run, test, spec)
    report: dict[str, Any] = {"metrics": task.score(outputs, test), **task.details(outputs, test)}
    if predictions:
        report["predictions"] = _predictions(task, outputs, test, spec, labels or list(test.classes), score_threshold)
    if reference is not None:
        other = load_model(reference)
        report["fidelity"] = task.fidelity(outputs_on(other.reference(), test, other.input_spec), outputs)
    return report


def _predictions(task: "Task", outputs: list, test: Any, spec: Any, labels: list[str],
                 score_threshold: float) -> list[dict[str, Any]]:
    """Each test image's result as ``predict`` writes it: the dataset's images met the model as one image would."""
    from edgeopt.runtime.predictor import describe

    frames = task.dataset_frames(test, spec)
    results = task.results(outputs, frames, score_threshold)
    return [describe(task, result, frame.size, labels) for result, frame in zip(results, frames)]


def _load_at(data: str, image_size: int):
    from edgeopt.tasks.classification.data import load_dataset

    return load_dataset(data, image_size=image_size)


# -- shared by the functions above -----------------------------------------------------------
def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _load(model: "str | LoadedModel", input: str | None, arch: str | None) -> "LoadedModel":
    from edgeopt.models.sources import load_model

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
    from edgeopt.tasks import task_of

    return task_of(model, default="classification")


def _step(config: "PassConfig", *kinds: str) -> Step:
    """The step of the first of the passes ``kinds`` whose config ``config`` is."""
    from edgeopt.passes import get_pass

    techniques = [get_pass(kind) for kind in kinds]
    for technique in techniques:
        if isinstance(config, technique.config_type):
            return Step.using(technique, config)
    wanted = " or ".join(t.config_type.__name__ for t in techniques)
    raise ConfigError(f"{kinds[0]} takes a {wanted} (from edgeopt.passes), not {type(config).__name__} {config!r}")


def _context(recipe: Recipe, workdir: Path, threads: int | None, resume: bool, progress: bool):
    from edgeopt.pipeline.builder import BuildContext

    return BuildContext.create(recipe, workdir, threads, show_progress=progress, resume=resume)


def _build_checkpoint(recipe: Recipe, out: Path, threads: int | None, resume: bool, progress: bool) -> Compressed:
    """Build ``recipe``'s PyTorch model, save it at ``out`` with its recipe beside it, measure before and after."""
    from edgeopt.models.sources import save_checkpoint
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
    from edgeopt.core.artifact import Artifact
    from edgeopt.core.errors import ArtifactError

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

    from edgeopt.models.sources import load_model
    from edgeopt.passes.prune import protected_layers

    baseline = load_model(recipe.model, arch=recipe.arch)
    return protected_layers(baseline.module, torch.from_numpy(baseline.input_spec.example()), step.config)
