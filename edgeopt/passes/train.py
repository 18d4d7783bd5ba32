"""The one training loop: training, fine-tuning, QAT and distillation all run through ``fit``.

SGD or AdamW, cosine or one-cycle schedule, the task's augmentation (flips and padded random
crops that move boxes with the pixels), a progress
bar, a checkpoint after every epoch, ``resume`` after an interruption, early stopping
on the validation score (the task's main metric), and fixed seeds. The loss and the
validation score come from the caller (see ``passes.finetune``), so the loop assumes no task.

Determinism is by construction, not by saving RNG state: epoch ``e`` shuffles and
augments with a generator seeded from ``(seed, e)``. A run killed mid-epoch and resumed
from the last epoch checkpoint replays that epoch exactly and ends at the same weights
as a run that was never interrupted. That is also how a ``deadline`` stops training: it is
checked before every batch, and ``BudgetExhausted`` leaves the last epoch's checkpoint
as the point a resumed run continues from.

Example:
    >>> result = fit(module, train, val, spec, TrainConfig(epochs=5), loss, validate)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from edgeopt.tasks.classification.data import ImageDataset
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import ConfigError
from edgeopt.measure.inference import outputs_on
from edgeopt.models.sources import torch_runner
from edgeopt.passes.base import TrainConfig  # defined beside FineTune, so the CLI reads its defaults without torch
from edgeopt.core.spec import InputSpec
from edgeopt.tasks import Task, get_task
from edgeopt.tasks.base import LossFn

EpochHook = Callable[[dict[str, float]], None]
CHECKPOINT_FORMAT = 2  # part of the resume fingerprint: checkpoints of another layout are refused, not misread
Validate = Callable[[nn.Module], float]  # the validation score of a module, higher is better


@dataclass
class TrainResult:
    best_val: float  # the best validation score (the task's main metric)
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)


class Validator:
    """The validation score of a module on ``val``: the task's main metric, turned so that higher is better.

    Its ``text`` words a score for the training log (``top-1 98.60%``).
    """

    def __init__(self, task: Task, val: ImageDataset, spec: InputSpec) -> None:
        self.task, self.val, self.spec, self.metric = task, val, spec, task.main

    def __call__(self, module: nn.Module) -> float:
        value = score_module(module, self.val, self.spec, self.task)[self.metric.name]
        return value if self.metric.higher_is_better else -value

    def text(self, score: float) -> str:
        return f"{self.metric.title} {self.metric.format(score if self.metric.higher_is_better else -score)}"


def score_module(module: nn.Module, dataset: ImageDataset, spec: InputSpec, task: Task,
                 batch_size: int = 256) -> dict[str, float]:
    """The task's metrics of an eager module on ``dataset`` (evaluated in eval mode, mode restored)."""
    was_training = module.training
    module.eval()
    try:
        outputs = outputs_on(torch_runner(module), dataset, spec, batch_size)
    finally:
        module.train(was_training)
    return task.score(outputs, dataset)


def fit(
    module: nn.Module,
    train: ImageDataset,
    val: ImageDataset,
    spec: InputSpec,
    config: TrainConfig,
    loss_fn: LossFn,
    validate: Validate,
    checkpoint: Path | None = None,
    resume: bool = False,
    on_epoch: EpochHook | None = None,
    show_progress: bool = True,
    task: Task | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> TrainResult:
    """Train ``module`` in place; it ends holding the weights of the best validation epoch.

    ``task`` (default: classification) turns ``train`` into batches of inputs and targets and
    augments them (boxes move with the pixels). ``deadline`` is checked before every batch
    (``BudgetExhausted``; the checkpoint keeps the last finished epoch).
    """
    batches = (task or get_task("classification")).training_data(train, spec)
    steps_per_epoch = _batches_per_epoch(len(train), config.batch_size)
    optimizer = _optimizer(module, config)
    scheduler = _scheduler(optimizer, config, steps_per_epoch)
    state = {"epoch": 0, "best_val": -float("inf"), "best_epoch": -1, "history": [], "best_state": None}
    fingerprint = _fingerprint(config, train, val, spec)
    if resume and checkpoint is not None and checkpoint.is_file():
        state = _restore(checkpoint, fingerprint, module, optimizer, scheduler)
    stopped_early = False
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    words = getattr(validate, "text", lambda score: f"{score:.4g}")
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        bar = progress.add_task("training", total=config.epochs * steps_per_epoch,
                                 completed=state["epoch"] * steps_per_epoch)
        total = config.epochs * steps_per_epoch
        for epoch in range(state["epoch"], config.epochs):
            done = epoch * steps_per_epoch

            def after_batch(step: int, done: int = done) -> None:
                progress.advance(bar)
                # between batches: a stop here loses part of an epoch, which a resume replays exactly;
                # after an epoch's last batch the epoch is finished, validated and saved first
                if step < steps_per_epoch:
                    deadline.check("training batches", done + step, total)

            deadline.check("training batches", done, total)
            train_loss = _train_epoch(module, batches, config, epoch, optimizer, scheduler, loss_fn, after_batch)
            val_score = validate(module)
            record = {"epoch": epoch + 1, "epochs": config.epochs, "train_loss": train_loss, "val": val_score,
                      "lr": optimizer.param_groups[0]["lr"]}
            state["history"].append(record)
            if val_score >= state["best_val"]:  # a tie goes to the later epoch: further along the schedule
                state.update(best_val=val_score, best_epoch=epoch + 1, best_state=copy.deepcopy(module.state_dict()))
            state["epoch"] = epoch + 1
            line = (f"epoch {epoch + 1}/{config.epochs} loss {train_loss:.3f} "
                    f"val {words(val_score)} (best {words(state['best_val'])})")
            progress.update(bar, description=line)
            if show_progress and not progress.console.is_terminal:  # logs get one line per epoch
                progress.console.print(line)
            if checkpoint is not None:
                _save(checkpoint, fingerprint, module, optimizer, scheduler, state)
            if on_epoch:
                on_epoch(record)
            if config.patience and epoch + 1 - state["best_epoch"] >= config.patience:
                stopped_early = True
                break
    if state["best_state"] is not None:
        module.load_state_dict(state["best_state"])
    module.eval()
    return TrainResult(state["best_val"], state["best_epoch"], state["epoch"], stopped_early, state["history"])


# -- one epoch -------------------------------------------------------------------------
def _batches_per_epoch(count: int, batch_size: int) -> int:
    # A last batch of one sample would break BatchNorm; it is dropped.
    full, rest = divmod(count, batch_size)
    return full + (1 if rest >= 2 else 0)


def _train_epoch(module, batches, config, epoch, optimizer, scheduler, loss_fn, after_batch) -> float:
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout and other in-model randomness
    order = torch.randperm(len(batches), generator=generator)
    module.train()
    total, seen = 0.0, 0
    for step in range(_batches_per_epoch(len(batches), config.batch_size)):
        index = order[step * config.batch_size:(step + 1) * config.batch_size]
        inputs, targets = batches.batch(index, generator, config.augment)
        loss = loss_fn(module, inputs, targets)
        if not torch.isfinite(loss):
            raise ConfigError(f"training diverged (loss {loss.item()}) in epoch {epoch + 1}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(index)
        seen += len(index)
        after_batch(step + 1)
    return total / max(seen, 1)


def _optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True)


def _scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    return None


# -- checkpoints -----------------------------------------------------------------------
def _fingerprint(config: TrainConfig, train: ImageDataset, val: ImageDataset, spec: InputSpec) -> str:
    """What must match for a checkpoint to be resumed: config, data and input."""
    digest = hashlib.sha256(json.dumps({"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(config),
                                        "input": spec.to_dict()}, sort_keys=True).encode())
    for array in (train.images, val.images):  # the images (every task has them) and, by their shapes, the split
        digest.update(np.ascontiguousarray(array).tobytes()[: 1 << 20])
        digest.update(str(array.shape).encode())
    return digest.hexdigest()


def epochs_done(checkpoint: Path) -> int:
    """How many epochs ``checkpoint`` holds: what a resume skips (0 without one, or when it cannot be read)."""
    if not checkpoint.is_file():
        return 0
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # truncated or foreign: the resume will say so, and start over
        return 0


def _save(path: Path, fingerprint: str, module, optimizer, scheduler, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "fingerprint": fingerprint,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        **state,
    }
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill during the save leaves the previous epoch's checkpoint intact


def _restore(path: Path, fingerprint: str, module, optimizer, scheduler) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files
        raise ConfigError(f"cannot resume from {path} ({str(exc).splitlines()[0]}); delete it to start over") from None
    if payload.get("fingerprint") != fingerprint:
        raise ConfigError(f"{path} was written by a run with other settings or data; delete it to start that training over")
    module.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    return {k: payload[k] for k in ("epoch", "best_val", "best_epoch", "history", "best_state")}
