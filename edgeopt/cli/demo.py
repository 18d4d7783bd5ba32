"""``edgeopt demo``: the main job on built-in data — train a small CNN, optimize it, write the report.

The data are scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, no
download), shown to the CNN at 32x32 so that the network does enough work for runtimes,
INT8 and pruning to differ. The search uses the default goals (at most 1 point of top-1
lost, latency first) and a budget sized to finish in a few minutes on two cores.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgeopt.cli.app import app
from edgeopt.report.console import make_console

DEMO_ARCH = "edgeopt.zoo:tiny_cnn?num_classes=10&in_channels=1&width=32"
DEMO_SIZE = 32


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Where the model, the search and the report go."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs of the demo CNN (about a minute)."),
    budget: str = typer.Option("150s", "--budget", help="Search budget."),
) -> None:
    """Train a small CNN on scikit-learn's digits, run `edgeopt optimize` on it, print the table and the report's path."""
    from edgeopt.cli.optimize import run_optimize
    from edgeopt.search import Goals, SearchConfig, SearchSpace, parse_duration

    console = make_console()
    model = train_demo_model(out / "digits-cnn.safetensors", epochs, console)
    # The edge runtimes that load without torch (and eager, the baseline); ExecuTorch and
    # TorchScript are left to `edgeopt optimize` itself: their compiles cost a demo minutes.
    space = SearchSpace(backends=("eager", "onnxruntime", "openvino"), prune_ratios=(0.5, 0.75), resolutions=(),
                        students=(), qat=False, epochs=20)
    config = SearchConfig(model=str(model), data="digits", out=out / "optimize", goals=Goals(),
                          budget_s=parse_duration(budget), space=space, force=True)
    run_optimize(config, console)


def train_demo_model(path: Path, epochs: int, console) -> Path:
    """Train the demo CNN (or reuse the one trained before with the same epochs)."""
    import json

    from edgeopt.data import input_spec_for, load_dataset
    from edgeopt.measure.accuracy import evaluate
    from edgeopt.models import load_model, save_checkpoint
    from edgeopt.passes.train import TrainConfig, fit

    stamp = path.with_suffix(".json")
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("epochs") == epochs:
        console.print(f"reusing the demo model {path} (delete it to retrain)", soft_wrap=True)
        return path
    splits = load_dataset("digits")
    spec = input_spec_for(splits.train, size=DEMO_SIZE)
    model = load_model(DEMO_ARCH, input=spec)
    model.task, model.labels = "classification", list(splits.classes)
    train, val = splits.train.split(0.1, 0)
    console.print(f"training a small CNN on scikit-learn's digits ({len(train)} train / {len(splits.test)} test images, "
                  f"shown at {DEMO_SIZE}x{DEMO_SIZE}), {epochs} epochs", soft_wrap=True)
    config = TrainConfig(epochs=epochs, optimizer="adamw", lr=0.01, weight_decay=0.05, schedule="onecycle", augment=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fit(model.module, train, val, spec, config, checkpoint=path.with_name(f"{path.name}.e{epochs}.train.pt"), resume=True)
    top1 = evaluate(model.reference(), splits.test, spec)["top1"]
    save_checkpoint(model, path)
    stamp.write_text(json.dumps({"epochs": epochs, "test_top1": top1}) + "\n")
    console.print(f"[green]trained[/]: test top-1 {top1:.2%} · {path}", soft_wrap=True)
    return path
