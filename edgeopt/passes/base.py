"""What a pass is: a name, a frozen validated config, and ``apply(model, config, context) -> new model``.

Passes are PyTorch-level techniques (prune, sparsify, distill, qat, finetune), one file
each, found by the registry in ``edgeopt.passes``; a pass defined outside edgeopt joins
with ``register_pass``. The CLI, the Python API, ``edgeopt build`` and ``optimize`` all
run a technique through the same pass, so it has one code path.

A pass never changes the model it is given and writes no files, except the training
checkpoints of its fine-tune under the path its context names (so an interrupted run
resumes). ``FineTune`` is the fine-tuning every pass shares: its epochs, optimizer, and
knowledge distillation from the context's teacher; ``TrainConfig`` the settings of one
training run (``edgeopt train``'s defaults), which the one training loop (``passes.train``) reads.

A pass also says what the search should try of it: ``search_steps`` returns the configs it
offers a search's stage 2, each with its place in the priority's order (``SearchStep``).

Example:
    >>> FineTune(epochs=5).train_config(seed=0).epochs
    5
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from edgeopt.core.size import Size
    from edgeopt.tasks.classification.data import DatasetSplits
    from edgeopt.models.sources import LoadedModel
    from edgeopt.search.space import SearchSpace
    from edgeopt.tasks import Task

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")
# Where a stage-2 candidate is tried (``SearchStep.order``), lower first: the built-in passes place
# theirs between FIRST and LATER by the guide's strategy for the priority; a pass of your own goes
# after them by default; LAST is after everything (QAT, when latency comes first).
FIRST, LATER, LAST = 0.0, 100.0, 1000.0


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (validated on construction). The defaults are
    ``edgeopt train``'s: AdamW 0.002, weight decay 0.05, one-cycle trained the NEU ResNet-18 from
    scratch to 98.9% in 30 epochs, where SGD 0.05 with cosine reached 92.2% in 12."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.002
    weight_decay: float = 0.05
    momentum: float = 0.9  # SGD only
    schedule: str = "onecycle"
    augment: bool = True
    patience: int | None = None
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("training needs epochs >= 1 and batch_size >= 2")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("lr must be positive and weight_decay non-negative")
        if self.patience is not None and self.patience < 1:
            raise ConfigError("patience must be at least 1 epoch")


@dataclass(frozen=True)
class FineTune:
    """How a pass fine-tunes. ``epochs=0``: not at all. With ``distill``, the loss is
    ``alpha·CE + (1−alpha)·T²·KL`` against the context's teacher (T=3, alpha=0.7: the guide's recipe).

    The defaults are the recipe that recovered the NEU ResNet-18 fully after pruning 50% and 75%
    (benchmarks/compression.py): 15 epochs of distillation, AdamW 1e-3, one-cycle.
    """

    epochs: int = 15
    lr: float = 1e-3
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    weight_decay: float = 0.05
    batch_size: int = 64
    augment: bool = True
    distill: bool = True
    temperature: float = 3.0
    alpha: float = 0.7
    validation_split: float = 0.1  # of the training split, held out to pick the best epoch

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"fine-tuning epochs must be 0 or more, not {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.batch_size < 2:
            raise ConfigError("fine-tuning needs lr > 0, weight_decay >= 0 and batch_size >= 2")
        if self.temperature <= 0:
            raise ConfigError(f"the distillation temperature must be positive, not {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha (the weight of the label loss) must be in [0, 1], not {self.alpha}")
        if not 0.0 < self.validation_split < 1.0:
            raise ConfigError(f"the validation split must be between 0 and 1, not {self.validation_split}")

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=max(self.epochs, 1), batch_size=self.batch_size, optimizer=self.optimizer,
                           lr=self.lr, weight_decay=self.weight_decay, schedule=self.schedule,
                           augment=self.augment, seed=seed)


@dataclass(frozen=True)
class PassConfig:
    """Base of every pass's config: frozen, validated in ``__post_init__``, and serialisable
    (a ``fine_tune`` field is written as a nested table; lists come back as tuples)."""

    def to_dict(self) -> dict[str, Any]:
        """Every setting; a None that is the field's default is left out (TOML has no null)."""
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is not None:
                raise ConfigError(f"{type(self).__name__}.{f.name} = None cannot be written to a recipe")
            if value is not None:
                data[f.name] = _plain(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PassConfig":
        """The config from plain settings; a ``fine_tune`` dict overrides only the settings it names
        (the rest keep this pass's own fine-tuning defaults)."""
        by_name = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(by_name))
        if unknown:
            raise ConfigError(f"{cls.__name__} has no setting(s) {unknown}; it takes {sorted(by_name)}")
        try:
            values = {key: _frozen(value) for key, value in data.items()}
            if isinstance(data.get("fine_tune"), dict):
                values["fine_tune"] = dataclasses.replace(by_name["fine_tune"].default_factory(), **data["fine_tune"])
            return cls(**values)
        except TypeError as exc:  # an unknown fine_tune setting, or a missing required one
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    @property
    def epochs(self) -> int:
        """Fine-tuning epochs of the step (0 when it does not train)."""
        fine_tune = getattr(self, "fine_tune", None)
        return fine_tune.epochs if isinstance(fine_tune, FineTune) else 0


def _plain(value: Any) -> Any:
    if isinstance(value, FineTune):
        return dataclasses.asdict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@dataclass
class PassContext:
    """What a pass may use besides the model: the teacher (the model the recipe starts from,
    never modified), the data and its task, the seed, where its training checkpoint goes,
    how training shows progress, the deadline long work stops at (a search's budget), and the
    file the recipe was read from (``origin``: the names in it resolve through ``edgeopt.core.trust``)."""

    teacher: "LoadedModel"
    splits: "DatasetSplits"
    task: "Task"
    seed: int = 0
    checkpoint: Path | None = None
    resume: bool = True
    show_progress: bool = True
    on_epoch: Callable[[dict[str, float]], None] | None = None
    deadline: Deadline = NO_DEADLINE
    origin: str | None = None  # the file the recipe came from: a model source a step loads is data then

    def calibration(self, model: "LoadedModel", samples: int) -> "np.ndarray":
        """``samples`` stratified training images, preprocessed for ``model``."""
        from edgeopt.images import to_input

        return to_input(self.splits.train.calibration(samples).images, model.input_spec)


@dataclass(frozen=True)
class SearchRequest:
    """What a search tells a pass when it asks for stage-2 candidates: the space (``SearchSpace``:
    its epochs, calibration size, and the values of the built-in techniques), the priority
    (latency | accuracy | memory, as the search's ``Goals`` validated it), the model's square
    input side (None: not an image model, or not square), its input (width, height) (None: not an
    image model) and the lighter architectures to distil into (the space's, else the task's)."""

    space: "SearchSpace"
    priority: str
    input_size: int | None = None
    students: tuple[str, ...] = ()
    input_shape: "Size | None" = None

    @classmethod
    def for_input(cls, space: "SearchSpace", priority: str, size: "Size | int | None",
                  students: tuple[str, ...] = ()) -> "SearchRequest":
        """A request for a model whose input is ``size`` ((width, height), a square's side, or None)."""
        from edgeopt.core.size import parse_size

        shape = parse_size(size)
        side = shape[0] if shape and shape[0] == shape[1] else None
        return cls(space, priority, side, students, shape)


@dataclass(frozen=True)
class SearchStep:
    """A candidate a pass offers a search's stage 2: its config, and ``order``, where it is tried
    among every pass's offers (lower first; equal orders keep the registry's order, and a pass's
    own offers their order). It is exported each way stage 1 found fastest, or, for a pass that
    ``quantizes``, as INT8 in mode qat by the first runtime that converts fake-quantizers."""

    config: PassConfig
    order: float = LATER


class Pass(ABC):
    """A technique. ``config_type`` is its frozen config dataclass; ``quantizes`` marks a pass
    whose result carries fake-quantizers (it exports as INT8 in mode qat, and is not cached); ``cached``
    says whether the builder may save the result as a checkpoint and load it back (a result that is not the
    architecture it names, such as an early-exit network, is rebuilt, its training resuming from its checkpoint).
    ``search_steps`` is what a search tries of it by default (nothing, unless the pass says)."""

    name: ClassVar[str]
    config_type: ClassVar[type[PassConfig]]
    quantizes: ClassVar[bool] = False
    cached: ClassVar[bool] = True

    def config(self, **settings: Any) -> PassConfig:
        """This pass's config from keyword settings (a nested ``fine_tune`` may be a dict)."""
        return self.config_type.from_dict(settings)

    @abstractmethod
    def apply(self, model: "LoadedModel", config: PassConfig, context: PassContext) -> "LoadedModel":
        """A new model: ``model`` with the technique applied (``model`` itself is left as it is)."""

    @abstractmethod
    def label(self, config: PassConfig) -> str:
        """A short name for tables, e.g. 'prune 0.5 (15 ep)'."""

    def model_sources(self, config: PassConfig) -> tuple[str, ...]:
        """The model sources the step loads besides its input (a distillation's student): a recipe read
        from a file has them checked (``edgeopt.core.trust``) before anything runs."""
        return ()

    def search_steps(self, request: SearchRequest) -> list[SearchStep]:
        """The candidates this pass offers a search's stage 2 (``edgeopt optimize``), in its order for
        ``request.priority``; none by default. A registered pass needs nothing else to be searched."""
        return []

    def untrained(self, config: PassConfig) -> PassConfig | None:
        """The config that gives the same architecture without training, for latency probes;
        None when the step leaves the architecture alone (it is left out of the probe)."""
        fine_tune = getattr(config, "fine_tune", None)
        if not isinstance(fine_tune, FineTune):
            return config
        return dataclasses.replace(config, fine_tune=dataclasses.replace(fine_tune, epochs=0))


def epochs_label(config: PassConfig) -> str:
    return f" ({config.epochs} ep)" if config.epochs else ""
