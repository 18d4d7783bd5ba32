"""``edgeopt train``: a baseline classifier from a dataset, checkpointed and resumable."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    PluginOption,
    ResumeOption,
    SeedOption,
    batch_size_option,
    epochs_option,
    lr_option,
    optimizer_option,
    schedule_option,
    weight_decay_option,
    write_summary,
)
from edgeopt.passes.base import TrainConfig
from edgeopt.report.console import make_console

TRAIN = TrainConfig()  # the training defaults below are this config's


@app.command("train")
def train_command(
    data: str = typer.Argument(..., help="digits, a .npz file (x_train/y_train/x_test/y_test), or an ImageFolder tree."),
    arch: str = typer.Option(..., "--arch", help="Architecture, e.g. torchvision:resnet18 (classes and channels are set from the data)."),
    out: Path = typer.Option(..., "--out", "-o", help="The trained model: a .safetensors checkpoint (a .json summary goes beside it)."),
    epochs: int = epochs_option(TRAIN.epochs),
    batch_size: int = batch_size_option(TRAIN.batch_size),
    lr: float = lr_option(TRAIN.lr),
    optimizer: str = optimizer_option(TRAIN.optimizer),
    schedule: str = schedule_option(TRAIN.schedule),
    weight_decay: float = weight_decay_option(TRAIN.weight_decay),
    augment: bool = typer.Option(TRAIN.augment, "--augment/--no-augment", help="Random flips and padded crops."),
    patience: Optional[int] = typer.Option(TRAIN.patience, "--patience", help="Stop after this many epochs without a better validation score."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the training set held out for validation."),
    seed: int = SeedOption,
    resume: bool = ResumeOption,
    extra_train: List[str] = typer.Option([], "--extra-train", help="More .npz training files."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Load ImageFolder images at this size."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="Show the images to the model at this size: a side (8x8 digits at 48) or WIDTHxHEIGHT (a detector at 320x240)."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    task: str = typer.Option("classification", "--task", help="classification, detection (boxes: a COCO json, "
                             "a YOLO folder, or the NEU-DET .npz; arch e.g. edgeopt.models.detectors:ssdlite), or a task a "
                             "--plugin module registers."),
    plugin: List[str] = PluginOption,
) -> None:
    """Train ARCH on DATA; keep the best validation epoch; report test accuracy (or mAP), size and MACs.

    Defaults (AdamW 0.002, weight decay 0.05, one-cycle) trained the NEU ResNet-18 from scratch to
    98.9% in 30 epochs, where SGD 0.05 with cosine reached 92.2% in 12.
    """
    from edgeopt.api import train

    console = make_console()
    trained = train(data, arch, out, epochs, lr=lr, optimizer=optimizer, schedule=schedule, weight_decay=weight_decay,
                    batch_size=batch_size, augment=augment, patience=patience, val_fraction=val_fraction, seed=seed,
                    resume=resume, extra_train=extra_train, image_size=image_size, input_size=input_size,
                    threads=threads, task=task)
    m = trained.measurement
    write_summary(out.with_suffix(".json"), {"data": data, "arch": trained.model.arch, "best_epoch": trained.best_epoch,
                                             "history": trained.history, "test": m.metrics, "macs": m.macs,
                                             "params": m.params, "size_mb": out.stat().st_size / 2**20,
                                             "eager_p50_ms": m.latency_ms})
    from edgeopt.tasks import get_task

    main = get_task(trained.model.task).main
    console.print(f"[green]trained[/] {trained.model.arch}: test {main.title} {main.format(m.metrics[main.name])} (best epoch "
                  f"{trained.best_epoch}) · {m.macs / 1e6:.1f} MMACs · {m.params / 1e6:.2f} M params · "
                  f"{out.stat().st_size / 2**20:.2f} MB · {out}", soft_wrap=True)
