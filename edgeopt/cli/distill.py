"""``edgeopt distill``: train a student from a teacher (and at a lower resolution if asked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    AlphaOption,
    BatchSizeOption,
    OptimizerOption,
    ResumeOption,
    ScheduleOption,
    SeedOption,
    TemperatureOption,
    ThreadsOption,
    WeightDecayOption,
    load,
)
from edgeopt.cli.compare import comparison_table, figures
from edgeopt.data import dataset_for
from edgeopt.errors import ConfigError
from edgeopt.report.console import make_console


def parse_hints(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    hints = []
    for pair in pairs:
        student, sep, teacher = pair.partition(":")
        if not sep or not student or not teacher:
            raise ConfigError(f"--hint takes STUDENT_LAYER:TEACHER_LAYER, e.g. features.6:layer2; got {pair!r}")
        hints.append((student, teacher))
    return tuple(hints)


@app.command("distill")
def distill_command(
    student: str = typer.Argument(..., help="The student: an architecture (torchvision:mobilenet_v2; classes and channels set from the data) or a checkpoint (e.g. a pruned model)."),
    teacher: str = typer.Option(..., "--teacher", help="The trained teacher checkpoint."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file or an ImageFolder tree."),
    out: Path = typer.Option(..., "--out", "-o", help="The student checkpoint (.safetensors); a .json summary goes beside it."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Train and evaluate the student at this (lower) image size."),
    epochs: int = typer.Option(15, "--epochs"),
    temperature: float = TemperatureOption,
    alpha: float = AlphaOption,
    hint: List[str] = typer.Option([], "--hint", help="Attention-transfer feature hint STUDENT_LAYER:TEACHER_LAYER (repeatable)."),
    hint_weight: float = typer.Option(0.0, "--hint-weight", help="Weight of the feature hints (e.g. 100)."),
    lr: float = typer.Option(0.002, "--lr"),
    optimizer: str = OptimizerOption,
    schedule: str = ScheduleOption,
    weight_decay: float = WeightDecayOption,
    batch_size: int = BatchSizeOption,
    resume: bool = ResumeOption,
    seed: int = SeedOption,
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Distil TEACHER into STUDENT (α·CE + (1−α)·T²·KL, T=3, α=0.7) and compare the two."""
    import dataclasses

    import torch

    from edgeopt.models import arch_for_dataset, load_model, save_checkpoint
    from edgeopt.passes.distill import DistillConfig, distillation_loss
    from edgeopt.passes.train import TrainConfig, fit

    if threads:
        torch.set_num_threads(threads)
    console = make_console()
    distill_config = DistillConfig(temperature, alpha, parse_hints(hint), hint_weight)
    config = TrainConfig(epochs=epochs, lr=lr, optimizer=optimizer, schedule=schedule, weight_decay=weight_decay,
                         batch_size=batch_size, seed=seed)
    teacher_model = load(teacher, None, None)
    if teacher_model.module is None:
        raise ConfigError("the teacher must be a PyTorch model (a checkpoint or torchvision:/factory source)")
    splits = dataset_for(data, teacher_model)
    torch.manual_seed(seed)
    if ":" in student and not Path(student).exists():
        student_model = load_model(arch_for_dataset(student, len(splits.classes), splits.train.channels),
                                   input=teacher_model.input_spec)
        student_model.task, student_model.labels = teacher_model.task, teacher_model.labels
    else:
        student_model = load(student, None, None)
    if input_size is not None:
        shape = (*student_model.input_spec.shape[:-2], input_size, input_size)
        student_model.input_spec = dataclasses.replace(student_model.input_spec, shape=shape)
    train, val = splits.train.split(0.1, seed)
    before = figures("teacher", teacher_model, splits.test, threads)
    fit(student_model.module, train, val, student_model.input_spec, config,
        checkpoint=out.with_name(out.name + ".train.pt"), resume=resume,
        loss_fn=distillation_loss(teacher_model.module, distill_config))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(student_model, out)
    size = "x".join(map(str, student_model.input_spec.shape[-2:]))
    after = figures(f"student {student_model.arch.split('?')[0]} @ {size}", student_model, splits.test, threads)
    out.with_suffix(".json").write_text(json.dumps({"teacher": teacher, "student": student_model.arch,
                                                    "distill": dataclasses.asdict(distill_config),
                                                    "train": dataclasses.asdict(config),
                                                    "before": before.__dict__, "after": after.__dict__}, indent=2) + "\n")
    console.print(comparison_table(f"distillation ({len(splits.test)} test images, eager FP32, batch 1)", [before, after]))
    console.print(f"[green]saved[/] {out}", soft_wrap=True)
