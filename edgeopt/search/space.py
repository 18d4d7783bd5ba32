"""The candidates a search explores, cheap first, in the order the priority asks for.

Stage 1 (no training): every backend that runs here and on the device, at FP32, INT8 PTQ
and — where the backend has it — accuracy-aware INT8.
Stage 2 (fine-tuning): what every registered pass offers (``Pass.search_steps``: pruned
models, lower resolutions, lighter students, QAT, and a plugin pass's own), then any extra
``steps``, each exported the way stage 1 found fastest. The passes place their offers by
the guide's strategy for the priority: latency first tries pruning then lower resolution;
accuracy first tries QAT and gentle pruning first; memory-limited tries the strongest
pruning first.

Example:
    >>> space = SearchSpace(prune_ratios=(0.5, 0.75), resolutions=(0.75,), students=(), epochs=2)
    >>> base, export = Recipe("m.safetensors", "d"), ExportConfig("onnxruntime", "int8")
    >>> for recipe in fine_tune_candidates(space, base, "memory", [export], 64, ["openvino"]):
    ...     print(recipe.label)
    prune 0.75 (2 ep) → onnxruntime int8
    prune 0.5 (2 ep) → onnxruntime int8
    distil→same arch @48px (2 ep) → onnxruntime int8
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from edgeopt.core.errors import ConfigError
from edgeopt.core.size import Size
from edgeopt.passes import SearchRequest, all_passes
from edgeopt.passes.base import LATER
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.core.quantization import QuantizationConfig
from edgeopt.search import pareto
from edgeopt.search.candidate import Candidate
from edgeopt.tasks import Metric

RUNTIME_GOALS = ("max_memory_mb", "memory_cap")  # bounds a smaller model does not fix: the runtime's own footprint


@dataclass(frozen=True)
class SearchSpace:
    """What may be tried. ``backends=None``: every backend that runs here and on the device.
    ``prune_ratios``, ``resolutions``, ``students``, ``qat`` (and ``qat_epochs``) are read by the
    passes they belong to (``Pass.search_steps``); ``epochs`` is every pass's fine-tuning.
    ``steps``: extra model steps to try in stage 2, each on its own (a plugin pass's settings, say)."""

    backends: tuple[str, ...] | None = None
    int8: bool = True
    prune_ratios: tuple[float, ...] = (0.5, 0.75)
    resolutions: tuple[float, ...] = (0.75,)  # fractions of the input size, distilled
    students: tuple[str, ...] | None = None  # None: the task's own (MobileNetV2 for a classifier, a half-width SSDlite for a detector)
    qat: bool = True
    epochs: int = 15
    qat_epochs: int = 3
    calibration_samples: int = 300
    steps: tuple[Step, ...] = ()
    min_student_input: int = 32  # torchvision students downsample 32x

    def __post_init__(self) -> None:
        if any(not 0 < r < 1 for r in self.prune_ratios):
            raise ConfigError(f"prune ratios must be between 0 and 1; got {self.prune_ratios}")
        if any(not 0 < r < 1 for r in self.resolutions):
            raise ConfigError(f"resolutions are fractions of the input size between 0 and 1; got {self.resolutions}")
        if self.epochs < 1 or self.qat_epochs < 1:
            raise ConfigError("fine-tuning needs at least one epoch")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["steps"] = [step.to_dict() for step in self.steps]
        return data


def export_candidates(space: SearchSpace, base: Recipe, backends: list[Any], max_drop: float | None) -> list[Recipe]:
    """Stage 1: each backend at FP32, INT8 PTQ and accuracy-aware INT8 (baseline first), as far as it has them."""
    recipes = []
    for backend in backends:
        caps = backend.capabilities
        modes = [("static", None)] + ([("aware", max_drop)] if "aware" in caps.int8_modes and max_drop is not None else [])
        exports = [ExportConfig(backend.name)] if "fp32" in caps.precisions else []  # tflm is INT8 only
        if space.int8 and "int8" in caps.precisions and "static" in caps.int8_modes:
            exports += [ExportConfig(backend.name, "int8", QuantizationConfig(mode=mode, max_drop=drop,
                                                                              calibration_samples=space.calibration_samples))
                        for mode, drop in modes]
        recipes += [dataclasses.replace(base, export=export) for export in exports]
    return recipes


def plain_ptq(recipe: Recipe) -> Recipe | None:
    """The plain-PTQ sibling of an accuracy-aware INT8 ``recipe`` (same model, runtime and calibration);
    None for any other recipe."""
    quantization = recipe.export.quantization
    if quantization is None or quantization.mode != "aware":
        return None
    plain = dataclasses.replace(quantization, mode="static", max_drop=None)
    return dataclasses.replace(recipe, export=dataclasses.replace(recipe.export, quantization=plain))


def aware_not_needed(recipe: Recipe, lookup: Callable[[str], Any], priority: str) -> str | None:
    """Why accuracy-aware INT8 ``recipe`` cannot help, or None (both stages ask, before building it).

    Accuracy-aware PTQ only keeps more layers in FP32 than plain PTQ: slower, and no more accurate
    than the goal needs. So where plain PTQ of the same model on the same runtime (``lookup``: its
    journaled record by recipe hash) already meets the goals, it is skipped — unless accuracy is the
    priority, where keeping more FP32 may win.
    """
    plain = plain_ptq(recipe)
    if plain is None or priority == "accuracy":
        return None
    record = lookup(plain.hash)
    if isinstance(record, Candidate) and record.meets_goals:
        return "plain PTQ of the same model already meets the goals; accuracy-aware PTQ can only keep more FP32"
    return None


def runtime_candidates(stage1: list[tuple[Recipe, Candidate | None]]) -> list[tuple[Recipe, Candidate]]:
    """The stage-1 candidates that rank the runtimes for stage 2: measured, and not over a memory
    bound (pruning shrinks the model, not the runtime's footprint). One that loses too much
    accuracy still counts: its runtime's accuracy-aware INT8 may hold a fine-tuned model."""
    return [(recipe, record) for recipe, record in stage1
            if record is not None and record.ok and not any(v.goal in RUNTIME_GOALS for v in record.violations)]


def stage2_exports(stage1: list[tuple[Recipe, Candidate | None]], priority: str, metric: Metric) -> list[ExportConfig]:
    """How to export fine-tuned models: the fastest INT8 backend's PTQ, then its accuracy-aware PTQ
    (for when plain PTQ of a fine-tuned model loses too much); for accuracy first, also the
    fastest FP32 backend. Fastest as ``pareto.by_latency`` ranks: runtimes within timing noise
    of each other go by quality, then size. A runtime whose stage-1 candidates broke a memory
    bound is passed over (``runtime_candidates``; torch, for ExecuTorch's Python runtime)."""
    ranked = runtime_candidates(stage1)
    usable = {record.key: recipe for recipe, record in ranked}
    records = [record for _, record in ranked]
    exports: list[ExportConfig] = []
    int8 = pareto.by_latency([r for r in records if usable[r.key].export.precision == "int8"], metric)
    if int8:
        backend = usable[int8[0].key].export.backend
        ours = [usable[r.key] for r in int8 if usable[r.key].export.backend == backend]
        exports += [r.export for r in sorted(ours, key=lambda r: r.export.quantization.mode != "static")]
        # accuracy-aware INT8 skipped for the baseline (its plain INT8 sufficed) may be what a fine-tuned model needs
        exports += [recipe.export for recipe, record in stage1 if record is not None and record.status == "skipped"
                    and recipe.export.backend == backend and plain_ptq(recipe) is not None]
    fp32 = pareto.by_latency([r for r in records if usable[r.key].export.precision == "fp32"], metric)
    if fp32 and (not exports or priority == "accuracy"):
        exports.append(usable[fp32[0].key].export)
    return exports


def fine_tune_candidates(space: SearchSpace, base: Recipe, priority: str, exports: list[ExportConfig],
                         input_size: Size | int | None, qat_backends: list[str], students: tuple[str, ...] = ()) -> list[Recipe]:
    """Stage 2, in the priority's order: what every registered pass offers (``Pass.search_steps``,
    plugin passes included), then the space's extra ``steps``. Each is exported the ways in
    ``exports`` (the stage-1 settings to reuse: fastest INT8 first, then fastest FP32); a step of a
    pass that ``quantizes`` as INT8 in mode qat by the first of ``qat_backends`` (none: not tried).
    ``students``: the task's, unless the space names some."""
    qat = [ExportConfig(qat_backends[0], "int8", QuantizationConfig(
        mode="qat", calibration_samples=space.calibration_samples))] if qat_backends else []
    offers = sorted(model_steps(space, priority, input_size, students), key=lambda offer: offer[1])
    return [dataclasses.replace(base, steps=(step,), export=export)
            for step, _ in offers for export in (qat if step.technique.quantizes else exports)]


def model_steps(space: SearchSpace, priority: str, input_size: Size | int | None,
                students: tuple[str, ...] = ()) -> list[tuple[Step, float]]:
    """Every registered pass's stage-2 offers and the space's extra steps, each with its order (unsorted)."""
    request = SearchRequest.for_input(space, priority, input_size,
                                      students if space.students is None else space.students)
    offers = [(Step.using(technique, offer.config), offer.order)
              for technique in all_passes() for offer in technique.search_steps(request)]
    return offers + [(step, LATER) for step in space.steps]
