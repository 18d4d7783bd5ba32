"""``edgeopt train``: a baseline classifier from a dataset, checkpointed and resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    BatchSizeOption,
    OptimizerOption,
    ResumeOption,
    ScheduleOption,
    SeedOption,
    WeightDecayOption,
)
from edgeopt.report.console import make_console


@app.command("train")
def train_command(
    data: str = typer.Argument(..., help="digits, a .npz file (x_train/y_train/x_test/y_test), or an ImageFolder tree."),
    arch: str = typer.Option(..., "--arch", help="Architecture, e.g. torchvision:resnet18 (classes and channels are set from the data)."),
    out: Path = typer.Option(..., "--out", "-o", help="The trained model: a .safetensors checkpoint (a .json summary goes beside it)."),
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = BatchSizeOption,
    lr: float = typer.Option(0.002, "--lr"),
    optimizer: str = OptimizerOption,
    schedule: str = ScheduleOption,
    weight_decay: float = WeightDecayOption,
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random flips and padded crops."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Stop after this many epochs without a better validation accuracy."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the training set held out for validation."),
    seed: int = SeedOption,
    resume: bool = ResumeOption,
    extra_train: List[str] = typer.Option([], "--extra-train", help="More .npz training files."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Load ImageFolder images at this size."),
    threads: Optional[int] = typer.Option(None, "--threads"),
) -> None:
    """Train ARCH on DATA; keep the best validation epoch; report test accuracy, size and MACs.

    Defaults (AdamW 0.002, weight decay 0.05, one-cycle) trained the NEU ResNet-18 from scratch to
    98.9% in 30 epochs, where SGD 0.05 with cosine reached 92.2% in 12.
    """
    import torch

    from edgeopt.data import input_spec_for, load_dataset
    from edgeopt.measure.accuracy import evaluate
    from edgeopt.measure.profile import count_flops_and_params
    from edgeopt.models import arch_for_dataset, load_model, save_checkpoint
    from edgeopt.passes.train import TrainConfig, fit

    if threads:
        torch.set_num_threads(threads)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, schedule=schedule,
                         weight_decay=weight_decay, augment=augment, patience=patience, seed=seed)
    console = make_console()
    splits = load_dataset(data, extra_train=extra_train, image_size=image_size, seed=seed)
    train, val = splits.train.split(val_fraction, seed)
    spec = input_spec_for(splits.train)
    torch.manual_seed(seed)
    model = load_model(arch_for_dataset(arch, len(splits.classes), splits.train.channels), input=spec)
    model.task, model.labels = "classification", list(splits.classes)
    console.print(f"{splits.source}: {len(train)} train / {len(val)} val / {len(splits.test)} test images, "
                  f"{len(splits.classes)} classes, input {'x'.join(map(str, spec.shape))}", soft_wrap=True)
    result = fit(model.module, train, val, spec, config, checkpoint=out.with_name(out.name + ".train.pt"), resume=resume)
    test = evaluate(model.reference(), splits.test, spec)
    cost = count_flops_and_params(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out)
    summary = {"data": splits.source, "arch": model.arch, "config": config.__dict__, "best_epoch": result.best_epoch,
               "best_val_accuracy": result.best_val_accuracy, "stopped_early": result.stopped_early,
               "history": result.history, "test": test, "macs": cost["macs"], "params": cost["params"],
               "size_mb": out.stat().st_size / 2**20}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"[green]trained[/] {model.arch}: test top-1 {test['top1']:.2%} (best val {result.best_val_accuracy:.2%} "
                  f"at epoch {result.best_epoch}) · {cost['macs'] / 1e6:.1f} MMACs · {cost['params'] / 1e6:.2f} M params · "
                  f"{summary['size_mb']:.2f} MB · {out}", soft_wrap=True)
