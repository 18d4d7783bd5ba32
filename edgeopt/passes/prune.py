"""Structured pruning: channels physically removed (Torch-Pruning), then fine-tuned to recover.

Torch-Pruning's dependency graph makes coupled layers (residual adds, depthwise
convolutions, concatenations, the BatchNorm after a conv) shrink together, so the
result is a smaller dense model that every runtime runs faster. The layers that produce
the model's outputs are found by tracing one forward pass and are never pruned, so a
classifier keeps its classes and a detector its head, without knowing which one it is.
MACs are counted by ``measure.profile.count_macs`` (torch.utils.flop_counter), the same
counter every printed MMAC figure uses. The pass prunes in ``steps`` and fine-tunes
after each (by default with knowledge distillation from the unpruned model).

Example:
    >>> pruned = PASS.apply(model, PruneConfig(ratio=0.5), context)          # doctest: +SKIP
    >>> result = prune_channels(module, example, PruneConfig(ratio=0.5))     # doctest: +SKIP
    >>> result.macs_after / result.macs_before                               # doctest: +SKIP
    0.26
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from edgeopt.core.errors import ConfigError
from edgeopt.measure.profile import count_macs
from edgeopt.models.sources import flatten_outputs
from edgeopt.passes.base import FineTune, Pass, PassConfig, PassContext, SearchRequest, SearchStep, epochs_label
from edgeopt.passes.finetune import fine_tune

if TYPE_CHECKING:  # torch is imported where a model is pruned: the CLI reads PruneConfig's defaults without it
    import torch
    from torch import nn

    from edgeopt.models.sources import LoadedModel

    LossOnBatch = Callable[[nn.Module], torch.Tensor]
    StepHook = Callable[[int, nn.Module], None]

IMPORTANCES = ("l1", "l2", "bn", "taylor")


def prunable(layer: "nn.Module") -> bool:
    """Whether ``layer`` has output channels to remove (or weights to zero): a convolution or a linear layer."""
    from torch import nn

    return isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


@dataclass(frozen=True)
class PruneConfig(PassConfig):
    """What to remove (a channel ``ratio`` per layer, or enough to reach ``target_macs``), and
    how to fine-tune after each of the ``steps``."""

    ratio: float = 0.5
    target_macs: int | None = None
    importance: str = "l2"
    global_pruning: bool = False
    round_to: int = 8  # keep channel counts a multiple of this (SIMD-friendly); 1: no rounding
    steps: int = 1
    ignore: tuple[str, ...] = ()
    fine_tune: FineTune = field(default_factory=FineTune)

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"the pruning ratio must be between 0 and 1 (exclusive), not {self.ratio}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"importance must be one of {', '.join(IMPORTANCES)}, not {self.importance!r}")
        if self.steps < 1:
            raise ConfigError("pruning needs at least one step")
        if self.target_macs is not None and self.target_macs <= 0:
            raise ConfigError("target_macs must be a positive MAC count")
        if self.round_to < 1:
            raise ConfigError("round_to must be a positive channel multiple (1: no rounding)")


@dataclass
class PruneResult:
    ratio: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    protected: list[str]
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def macs_reduction(self) -> float:
        return self.macs_before / max(self.macs_after, 1)


def output_layers(module: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the conv/linear layers whose result is a model output (else the last one run)."""
    produced: dict[int, str] = {}
    order: list[str] = []
    import torch

    hooks = []
    for name, layer in module.named_modules():
        if prunable(layer):
            def record(_layer, _inputs, output, name=name):
                produced[id(output)] = name
                order.append(name)
            hooks.append(layer.register_forward_hook(record))
    try:
        with torch.no_grad():
            outputs = flatten_outputs(module.eval()(example))
    finally:
        for hook in hooks:
            hook.remove()
    found = [produced[id(out)] for out in outputs if id(out) in produced]
    if found:
        return sorted(set(found), key=order.index)
    if not order:
        raise ConfigError("the model has no convolution or linear layer to prune")
    return [order[-1]]  # an output reshaped after its last layer: keep that layer whole


def prune_channels(module: nn.Module, example: torch.Tensor, config: PruneConfig,
                   loss_on_batch: LossOnBatch | None = None, after_step: StepHook | None = None) -> PruneResult:
    """Remove channels from ``module`` in place; ``after_step`` (e.g. a fine-tune) runs after each step."""
    if config.importance == "taylor" and loss_on_batch is None:
        raise ConfigError("Taylor importance needs labelled data to compute gradients; use l1, l2 or bn")
    # Torch-Pruning follows the autograd graph: a frozen parameter has none, and its layer would
    # silently stay whole. A model about to be pruned is about to be fine-tuned anyway.
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    macs_before, params_before = count_macs(module, example)
    protected = protected_layers(module, example, config)
    ratio = config.ratio
    if config.target_macs is not None:
        ratio = _ratio_for_macs(module, example, config, config.target_macs, protected, macs_before)
    _check_on_a_copy(module, example, config, ratio, protected)
    pruner = _pruner(module, example, config, ratio, protected)
    result = PruneResult(ratio, macs_before, macs_before, params_before, params_before, protected)
    for step in range(config.steps):
        if config.importance == "taylor":
            module.zero_grad()
            loss_on_batch(module).backward()
        module.eval()
        pruner.step()
        module.zero_grad(set_to_none=True)
        macs, params = count_macs(module, example)
        result.steps.append({"step": step + 1, "macs": macs, "params": params})
        if after_step is not None:
            after_step(step + 1, module)
    result.macs_after, result.params_after = count_macs(module, example)
    if result.params_after >= params_before:
        raise ConfigError("Torch-Pruning found no channel it could remove from this model; if its layers are "
                          "custom operations, keep them whole (the prune step's ignore setting) or prune a torchvision-style model")
    return result


def ratio_for_macs(module: nn.Module, example: torch.Tensor, config: PruneConfig, target_macs: int) -> float:
    """The smallest uniform ratio whose pruned copy has at most ``target_macs``.

    MACs are not monotonic in the ratio near its top (rounding to ``round_to`` can leave a
    narrow layer unpruned), so a coarse scan finds the first ratio that reaches the target
    and bisection refines it against the previous scan point.
    """
    return _ratio_for_macs(module, example, config, target_macs, protected_layers(module, example, config),
                           count_macs(module, example)[0])


def _ratio_for_macs(module: nn.Module, example: torch.Tensor, config: PruneConfig, target_macs: int,
                    protected: list[str], macs_before: int) -> float:
    if target_macs >= macs_before:
        raise ConfigError(f"the model already has {macs_before:,} MACs, at or under the target {target_macs:,}")
    low, seen = 0.0, {}
    for high in [step / 10 for step in range(1, 10)]:
        seen[high] = _macs_at(module, example, config, high, protected)
        if seen[high] <= target_macs:
            break
        low = high
    else:
        raise ConfigError(f"no pruning ratio up to 90% reaches {target_macs:,} MACs (closest {min(seen.values()):,}); "
                          "raise the target or keep fewer layers whole")
    for _ in range(5):
        middle = (low + high) / 2
        if _macs_at(module, example, config, middle, protected) > target_macs:
            low = middle
        else:
            high = middle
    return high


def protected_layers(module: nn.Module, example: torch.Tensor, config: PruneConfig) -> list[str]:
    """Layers never pruned: those producing the outputs, a detector's box and class predictors
    (their output channels are anchors x classes), and the ones the user named."""
    head = getattr(module, "head_layers", None)
    return sorted(set(output_layers(module, example)) | set(head() if callable(head) else ()) | set(config.ignore))


def _pruned_copy(module: nn.Module, example: torch.Tensor, config: PruneConfig, ratio: float,
                 protected: list[str]) -> nn.Module:
    """A copy pruned at ``ratio`` in one step by L2 magnitude: the structure ``config`` would give,
    without Taylor's gradients. Not under no_grad: the dependency graph is traced through autograd."""
    trial = copy.deepcopy(module)
    _pruner(trial, example, dataclasses.replace(config, steps=1, importance="l2"), ratio, protected).step()
    return trial


def _check_on_a_copy(module: nn.Module, example: torch.Tensor, config: PruneConfig, ratio: float,
                     protected: list[str]) -> None:
    """Prune a copy first: Torch-Pruning can misread some graphs (a channel shuffle's reshapes)
    and leave a model that no longer runs; the caller's model must not be the casualty."""
    expected = [tuple(out.shape) for out in flatten_outputs(module.eval()(example))]
    try:
        trial = _pruned_copy(module, example, config, ratio, protected)
        produced = [tuple(out.shape) for out in flatten_outputs(trial.eval()(example))]
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means the pruned graph is broken
        produced = [f"{type(exc).__name__}: {str(exc).splitlines()[0]}"]
    if produced != expected:
        raise ConfigError(
            f"Torch-Pruning cannot follow this model's channel dependencies: the pruned copy gives {produced[0]} "
            f"instead of outputs shaped {expected[0]}; keep the offending layers whole (the prune step's ignore setting), or distill "
            "into a lighter architecture instead")


def _macs_at(module: nn.Module, example: torch.Tensor, config: PruneConfig, ratio: float, protected: list[str]) -> int:
    return count_macs(_pruned_copy(module, example, config, ratio, protected), example)[0]


def _pruner(module: nn.Module, example: torch.Tensor, config: PruneConfig, ratio: float, protected: list[str]):
    import torch_pruning as tp

    layers = dict(module.named_modules())
    missing = [name for name in protected if name not in layers]
    if missing:
        raise ConfigError(f"no layer named {missing[0]!r} to keep unpruned; layer names look like "
                          f"{', '.join(list(layers)[1:4])}")
    importance = {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[config.importance]()
    try:
        return tp.pruner.MetaPruner(
            module.eval(), example, importance=importance, pruning_ratio=ratio, global_pruning=config.global_pruning,
            iterative_steps=config.steps, ignored_layers=[layers[name] for name in protected],
            round_to=config.round_to if config.round_to > 1 else None,
        )
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning fails in many ways on graphs it cannot follow
        raise ConfigError(
            f"Torch-Pruning cannot follow this model's channel dependencies ({type(exc).__name__}: {exc}); "
            "keep the offending layers whole (the prune step's ignore setting), or distill into a lighter architecture instead"
        ) from None


class PrunePass(Pass):
    name = "prune"
    config_type = PruneConfig

    def apply(self, model: "LoadedModel", config: PruneConfig, context: PassContext) -> "LoadedModel":
        import torch

        pruned = dataclasses.replace(model, module=copy.deepcopy(model.module))
        example = torch.from_numpy(model.input_spec.example())

        def after_step(step: int, module: nn.Module) -> None:
            checkpoint = context.checkpoint
            if checkpoint is not None and config.steps > 1:
                checkpoint = checkpoint.with_name(f"{checkpoint.stem}.step{step}{checkpoint.suffix}")
            fine_tune(module, pruned.input_spec, config.fine_tune, context, checkpoint)

        taylor = _taylor_loss(pruned, context) if config.importance == "taylor" else None
        prune_channels(pruned.module, example, config, taylor, after_step)
        return pruned

    def label(self, config: PruneConfig) -> str:
        amount = f"to {config.target_macs / 1e6:g}M MACs" if config.target_macs else f"{config.ratio:g}"
        return f"prune {amount}{epochs_label(config)}"

    def search_steps(self, request: SearchRequest) -> list[SearchStep]:
        """Each of the space's ``prune_ratios``, fine-tuned for its ``epochs``: gentlest first, but
        strongest first when memory is the priority; with accuracy first, only the gentlest comes
        early (after QAT), the stronger ones after the students and lower resolutions."""
        space = request.space
        ratios = sorted(space.prune_ratios, reverse=request.priority == "memory")
        later = 4.0 if request.priority == "accuracy" else 1.0
        return [SearchStep(self.config(ratio=ratio, fine_tune={"epochs": space.epochs}), 1.0 if i == 0 else later)
                for i, ratio in enumerate(ratios)]


def _taylor_loss(model: "LoadedModel", context: PassContext) -> "LossOnBatch":
    """The task's loss on 64 stratified training images, for Taylor importance's gradients."""
    import torch

    sample = context.splits.train.calibration(64, seed=1)
    inputs, targets = context.task.training_data(sample, model.input_spec).batch(torch.arange(len(sample)), None, False)
    loss = context.task.training_loss()
    return lambda module: loss(module, inputs, targets)


PASS = PrunePass()
