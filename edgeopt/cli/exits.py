"""``edgeopt exits``: early-exit heads on a trained classifier, compiled stage by stage with calibrated settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import PluginOption, ResumeOption, SeedOption, ThreadsOption, epochs_option, lr_option
from edgeopt.passes.early_exit import EarlyExitConfig
from edgeopt.pipeline.exits import ExitsConfig

EXITS = EarlyExitConfig()  # every default below is these configs'
BUILD = ExitsConfig()


@app.command("exits")
def exits_command(
    model: str = typer.Argument(..., help="A trained classifier checkpoint (ResNet, MobileNet, ShuffleNet, ...)."),
    data: str = typer.Option(..., "--data", help="Its dataset: digits, a .npz file or an ImageFolder tree."),
    out: Path = typer.Option(..., "--out", "-o", help="The staged early-exit model folder to write."),
    cuts: Optional[str] = typer.Option(None, "--cuts", help="Blocks to put an exit after, e.g. layer1,layer2,layer3 (default: at about 1/4, 1/2 and 3/4 of the MACs)."),
    backend: str = typer.Option(BUILD.backend, "--backend", help="onnxruntime or openvino: the stages' runtime."),
    budgets: str = typer.Option(",".join(f"{b:g}" for b in BUILD.budgets), "--budgets", help="Points of top-1 a setting may lose on validation, one setting each."),
    head_width: int = typer.Option(EXITS.head_width, "--head-width", help="Channels of each exit head's convolution."),
    epochs: int = epochs_option(EXITS.fine_tune.epochs),
    lr: float = lr_option(EXITS.fine_tune.lr),
    seed: int = SeedOption,
    resume: bool = ResumeOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Train exit heads on MODEL (distilled from its final head), compile its stages, and calibrate settings from
    accuracy first to fastest; each setting's top-1 and mean MACs on the test split are printed, with its p50 at batch
    1 as timed on validation images (what `serve --target-p99-ms` and `stream --target-ms` plan with)."""
    import edgeopt
    from edgeopt.core.errors import ConfigError
    from edgeopt.pipeline.exits import outcome, stage_logits
    from edgeopt.tasks import get_task

    try:
        parsed = tuple(float(b) for b in budgets.split(",") if b.strip())
    except ValueError:
        raise ConfigError(f"--budgets takes points such as 0,0.5,1; got {budgets!r}") from None
    config = EarlyExitConfig(cuts=tuple(c for c in (cuts or "").split(",") if c), head_width=head_width,
                             fine_tune=dataclasses.replace(EXITS.fine_tune, epochs=epochs, lr=lr))
    staged = edgeopt.early_exits(model, data, out, config, ExitsConfig(backend=backend, budgets=parsed, threads=threads),
                                 seed=seed, threads=threads, resume=resume)
    test = get_task(staged.task).load(data, staged.input_spec).test
    logits = stage_logits(staged.stages, test, staged.input_spec, threads)
    full_macs = staged.record["full_macs"]
    typer.echo(f"{out}: exits after {', '.join(staged.record['cuts'])} ({backend}); settings on "
               f"{staged.record['validation_images']} validation and {len(test)} test images:")
    typer.echo(f"{'setting':<16} {'thresholds':<24} {'val top-1':>9} {'test top-1':>10} {'test MACs':>9} "
               f"{'p50 ms b1':>9}")
    cheapest = 1.0
    for setting in staged.settings:
        top1, macs = outcome(logits, test.labels, staged.exit_macs, full_macs, setting.thresholds)
        cheapest = min(cheapest, macs)
        thresholds = ",".join(f"{t:g}" for t in setting.thresholds)
        p50 = setting.latency_ms.get(1, {}).get("p50")
        timed = "" if p50 is None else f"{p50:.3f}"
        typer.echo(f"{setting.name:<16} {thresholds:<24} {setting.validation['top1']:>9.2%} {top1:>10.2%} {macs:>9.1%} "
                   f"{timed:>9}")
    if cheapest >= 1.0:
        typer.echo("note: even leaving every image at the first exit costs as much as the whole model here (the heads "
                   "cost more than the stages they skip); early exits do not pay on this network — try "
                   "--head-width 16, or later --cuts", err=True)
