"""``edgeopt demo``: the main job on built-in data — train a model, optimize it, write the report.

The data are scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, no
download), shown at 48x48 to a ResNet-18 with a one-channel stem: far more network than
ten digits need, which is the situation compression exists for. The search runs the
default goals (at most 1 point of top-1 lost, latency first) over the runtimes that load
without torch, INT8 and channel pruning with distillation, on a budget that finishes in a
few minutes on two cores.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgeopt.cli.app import app
from edgeopt.report.console import make_console

DEMO_ARCH = "torchvision:resnet18"
DEMO_SIZE = 48


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Where the model, the search and the report go."),
    epochs: int = typer.Option(8, "--epochs", help="Training epochs of the demo ResNet-18 (about 40 s)."),
    fine_tune_epochs: int = typer.Option(8, "--fine-tune-epochs", help="Distillation epochs after pruning."),
    budget: str = typer.Option("4m", "--budget", help="Search budget."),
) -> None:
    """Train a ResNet-18 on scikit-learn's digits, run `edgeopt optimize` on it, print the table and the report's path."""
    from edgeopt.cli.optimize import run_optimize
    from edgeopt.search import Goals, SearchSpace, parse_duration

    console = make_console(own_stdout=True)
    model = train_demo_model(out / "digits-resnet18.safetensors", epochs, console)
    # The edge runtimes that load without torch (and eager, the baseline); ExecuTorch and
    # TorchScript are left to `edgeopt optimize` itself: their compiles cost a demo minutes.
    space = SearchSpace(backends=("eager", "onnxruntime", "openvino"), prune_ratios=(0.5, 0.75), resolutions=(),
                        students=(), qat=False, epochs=fine_tune_epochs)
    run_optimize(str(model), "digits", out / "optimize", console, goals=Goals(), budget=parse_duration(budget),
                 space=space, force=True)


def train_demo_model(path: Path, epochs: int, console) -> Path:
    """Train the demo ResNet-18 (or reuse the one trained before with the same epochs)."""
    import json

    from edgeopt.api import train

    stamp = path.with_suffix(".json")
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("epochs") == epochs:
        console.print(f"reusing the demo model {path} (delete it to retrain)", soft_wrap=True)
        return path
    console.print(f"training a ResNet-18 on scikit-learn's digits (1,437 training images, shown at {DEMO_SIZE}x{DEMO_SIZE}), "
                  f"{epochs} epochs", soft_wrap=True)
    trained = train("digits", DEMO_ARCH, path, epochs, augment=False, input_size=DEMO_SIZE, resume=True)
    m = trained.measurement
    stamp.write_text(json.dumps({"epochs": epochs, "test": m.metrics}) + "\n")
    console.print(f"[green]trained[/]: test top-1 {m.metrics['top1']:.2%} · {m.macs / 1e6:.0f} MMACs · "
                  f"{m.params / 1e6:.1f} M parameters · eager p50 {m.latency_ms:.2f} ms · {path}", soft_wrap=True)
    return path
