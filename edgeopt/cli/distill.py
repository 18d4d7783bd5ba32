"""``edgeopt distill``: train a student from a teacher, at a lower resolution if asked (via edgeopt.api.distill)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    PluginOption,
    ResumeOption,
    SeedOption,
    ThreadsOption,
    alpha_option,
    batch_size_option,
    epochs_option,
    lr_option,
    optimizer_option,
    schedule_option,
    temperature_option,
    weight_decay_option,
    write_summary,
)
from edgeopt.core.errors import ConfigError
from edgeopt.core.size import of_shape, parse_size, size_text
from edgeopt.passes.distill import DistillConfig
from edgeopt.report.compare import comparison_table
from edgeopt.report.console import make_console

DISTILL = DistillConfig()  # every default below is this config's
TUNE = DISTILL.fine_tune


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
    student: str = typer.Argument(..., help="The student: an architecture (torchvision:mobilenet_v2; classes and channels set from the data), a checkpoint (e.g. a pruned model), or 'same' for the teacher's architecture."),
    teacher: str = typer.Option(..., "--teacher", help="The trained teacher checkpoint."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file or an ImageFolder tree."),
    out: Path = typer.Option(..., "--out", "-o", help="The student checkpoint (.safetensors); its .recipe.toml and a .json summary go beside it."),
    input_size: Optional[str] = typer.Option(DISTILL.input_size, "--input-size", help="Train and evaluate the student at this (lower) image size: a side or WIDTHxHEIGHT."),
    epochs: int = epochs_option(TUNE.epochs),
    temperature: float = temperature_option(TUNE.temperature),
    alpha: float = alpha_option(TUNE.alpha),
    hint: List[str] = typer.Option([], "--hint", help="Attention-transfer feature hint STUDENT_LAYER:TEACHER_LAYER (repeatable)."),
    hint_weight: float = typer.Option(DISTILL.hint_weight, "--hint-weight", help="Weight of the feature hints (e.g. 100)."),
    lr: float = lr_option(TUNE.lr),
    optimizer: str = optimizer_option(TUNE.optimizer),
    schedule: str = schedule_option(TUNE.schedule),
    weight_decay: float = weight_decay_option(TUNE.weight_decay),
    batch_size: int = batch_size_option(TUNE.batch_size),
    resume: bool = ResumeOption,
    seed: int = SeedOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Distil TEACHER into STUDENT (α·CE + (1−α)·T²·KL, T=3, α=0.7) and compare the two."""
    from edgeopt.api import distill
    from edgeopt.tasks import get_task

    console = make_console()
    fine_tune = dataclasses.replace(TUNE, epochs=epochs, lr=lr, optimizer=optimizer, schedule=schedule,
                                    weight_decay=weight_decay, batch_size=batch_size, temperature=temperature,
                                    alpha=alpha)
    config = DistillConfig(student=None if student in ("same", "none") else student, input_size=size_text(parse_size(input_size)) if input_size else None,
                           hints=parse_hints(hint), hint_weight=hint_weight, fine_tune=fine_tune)
    result = distill(teacher, data, out, config, seed=seed, threads=threads, resume=resume)
    write_summary(out.with_suffix(".json"), {"teacher": teacher, "student": result.model.arch,
                                             "recipe": result.recipe.to_dict(), "before": result.before.to_dict(),
                                             "after": result.after.to_dict()})
    size = size_text(of_shape(result.model.input_spec.shape))
    rows = [("teacher", result.before), (f"student {result.model.arch.split('?')[0]} @ {size}", result.after)]
    console.print(comparison_table(f"distillation ({result.recipe.label}; eager FP32, batch 1)", rows,
                                   get_task(result.model.task).main))
    console.print(f"[green]saved[/] {out} · recipe {out.with_suffix('.recipe.toml')}", soft_wrap=True)
