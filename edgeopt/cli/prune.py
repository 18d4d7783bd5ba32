"""``edgeopt prune``: remove channels (or zero weights), fine-tune to recover, compare (via edgeopt.api.prune)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    ArchOption,
    PluginOption,
    ResumeOption,
    SeedOption,
    ThreadsOption,
    alpha_option,
    batch_size_option,
    epochs_option,
    lr_option,
    optimizer_option,
    parse_count,
    schedule_option,
    temperature_option,
    weight_decay_option,
    write_summary,
)
from edgeopt.passes.prune import PruneConfig
from edgeopt.report.compare import comparison_table
from edgeopt.report.console import make_console

PRUNE = PruneConfig()  # every default below is this config's
TUNE = PRUNE.fine_tune


@app.command("prune")
def prune_command(
    model: str = typer.Argument(..., help="A trained PyTorch model, e.g. the .safetensors from `edgeopt train`."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file or an ImageFolder tree: fine-tune on its train split, report on its test split."),
    out: Path = typer.Option(..., "--out", "-o", help="The pruned checkpoint (.safetensors); its .recipe.toml and a .json summary go beside it."),
    ratio: float = typer.Option(PRUNE.ratio, "--ratio", help="Share of each layer's channels to remove."),
    target_macs: Optional[str] = typer.Option(PRUNE.target_macs, "--target-macs", help="Instead of --ratio: prune until MACs are at most this (e.g. 40M)."),
    importance: str = typer.Option(PRUNE.importance, "--importance", help="l1 | l2 | bn | taylor"),
    global_pruning: bool = typer.Option(PRUNE.global_pruning, "--global/--uniform", help="Rank channels across layers instead of the same ratio per layer."),
    round_to: int = typer.Option(PRUNE.round_to, "--round-to", help="Keep channel counts a multiple of this (SIMD-friendly; 1: no rounding)."),
    steps: int = typer.Option(PRUNE.steps, "--steps", help="Iterative pruning: prune a share, fine-tune, repeat."),
    ignore: List[str] = typer.Option(list(PRUNE.ignore), "--ignore", help="Layer names to keep whole (output layers always are)."),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="Unstructured instead: zero this share of weights (smaller compressed file, not faster)."),
    epochs: int = epochs_option(TUNE.epochs, "Fine-tuning epochs after each pruning step (0: none)."),
    distill: bool = typer.Option(TUNE.distill, "--distill/--no-distill", help="Fine-tune by distillation from the unpruned model."),
    temperature: float = temperature_option(TUNE.temperature),
    alpha: float = alpha_option(TUNE.alpha),
    lr: float = lr_option(TUNE.lr),
    optimizer: str = optimizer_option(TUNE.optimizer),
    schedule: str = schedule_option(TUNE.schedule),
    weight_decay: float = weight_decay_option(TUNE.weight_decay),
    batch_size: int = batch_size_option(TUNE.batch_size),
    resume: bool = ResumeOption,
    seed: int = SeedOption,
    arch: Optional[str] = ArchOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Prune MODEL (Torch-Pruning, channels physically removed), fine-tune, and compare before/after.

    The default fine-tune (15 epochs of distillation from the unpruned model, AdamW 1e-3,
    one-cycle) is what recovered the NEU ResNet-18 fully at 50% and 75% (benchmarks/compression.py);
    6 epochs of SGD at 0.01 left it 3.3 points short. `edgeopt build OUT.recipe.toml` rebuilds it.
    """
    from edgeopt.api import prune
    from edgeopt.passes.sparsify import SparsifyConfig
    from edgeopt.tasks import get_task

    console = make_console()
    fine_tune = dataclasses.replace(TUNE, epochs=epochs, lr=lr, optimizer=optimizer, schedule=schedule,
                                    weight_decay=weight_decay, batch_size=batch_size, distill=distill,
                                    temperature=temperature, alpha=alpha)
    if sparsity is not None:
        config = SparsifyConfig(amount=sparsity, fine_tune=fine_tune)
    else:
        config = PruneConfig(ratio=ratio, target_macs=parse_count(target_macs, "--target-macs") if target_macs else None,
                             importance=importance, global_pruning=global_pruning, round_to=round_to, steps=steps,
                             ignore=tuple(ignore), fine_tune=fine_tune)
    result = prune(model, data, out, config, seed=seed, arch=arch, threads=threads, resume=resume)
    write_summary(out.with_suffix(".json"), {"source": model, "recipe": result.recipe.to_dict(), **result.details,
                                             "macs_before": result.before.macs, "macs_after": result.after.macs,
                                             "before": result.before.to_dict(), "after": result.after.to_dict()})
    title = f"{model} ({result.recipe.label}; eager FP32, batch 1)"
    name = "sparsified" if sparsity is not None else f"pruned ({importance}, {'global' if global_pruning else 'uniform'})"
    rows = [("original", result.before), (name, result.after)]
    console.print(comparison_table(title, rows, get_task(result.model.task).main))
    if sparsity is not None:
        console.print(f"[yellow]note[/]: {result.details['note']}", soft_wrap=True)
    console.print(f"[green]saved[/] {out} · recipe {out.with_suffix('.recipe.toml')}", soft_wrap=True)
