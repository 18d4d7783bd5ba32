"""Options and option parsing shared by subcommands (declarations only: the work is in edgeopt.api)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from edgeopt.errors import ConfigError

InputOption = typer.Option(None, "--input", help="Input shape, batch first, e.g. 1x3x224x224 (inferred if omitted).")
ArchOption = typer.Option(None, "--arch", help="Architecture for a weights-only checkpoint, e.g. torchvision:resnet18.")
ThreadsOption = typer.Option(None, "--threads", help="Intra-op threads for every backend (default: all usable CPUs).")
TrustModelOption = typer.Option(False, "--trust-model", help="Let a TorchScript or .pt2 archive load: those are programs that run code when loaded; only for files you made or trust.")
AgentOption = typer.Option(None, "--agent", help="URL of an `edgeopt agent` on the device (http://HOST:8470): measure there, not here.")
AgentTokenOption = typer.Option(None, "--agent-token", envvar="EDGEOPT_AGENT_TOKEN", show_envvar=True, help="The agent's token (better: set EDGEOPT_AGENT_TOKEN, which stays out of the process list).")
CalibrateOption = typer.Option(None, "--calibrate", help="Calibration data for INT8: digits, a .npz file or an ImageFolder tree.")
CalibrationSamplesOption = typer.Option(300, "--calibration-samples", help="Stratified calibration images taken from its training split.")
MaxDropOption = typer.Option(None, "--max-accuracy-drop", help="Accuracy-aware INT8: most points of the main metric (top-1) to lose, held on part of the training split.")
PresetOption = typer.Option("performance", "--preset", help="NNCF preset: performance (symmetric) | mixed.")
# Fine-tuning options shared by train, prune and distill (defaults: the recipe that measured best on NEU)
OptimizerOption = typer.Option("adamw", "--optimizer", help="sgd | adamw")
ScheduleOption = typer.Option("onecycle", "--schedule", help="cosine | onecycle | constant")
WeightDecayOption = typer.Option(0.05, "--weight-decay")
BatchSizeOption = typer.Option(64, "--batch-size")
SeedOption = typer.Option(0, "--seed")
ResumeOption = typer.Option(False, "--resume", help="Continue an interrupted run from its last epoch checkpoint.")
TemperatureOption = typer.Option(3.0, "--temperature", help="Distillation temperature T.")
AlphaOption = typer.Option(0.7, "--alpha", help="Weight of the label loss; 1 - alpha goes to the teacher's soft targets.")


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """'1,8' -> (1, 8), with a clear error for anything else."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers like 1,8; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} must be positive integers; got {text!r}")
    return values


def parse_count(text: str, what: str) -> int:
    """'50M' -> 50_000_000; plain integers and k/M/G suffixes."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        count = int(float(text[:-1] if scale > 1 else text) * scale)
    except (ValueError, OverflowError):  # not a number; inf
        raise ConfigError(f"{what} must be a count like 50M or 2.5G, not {text!r}") from None
    if count < 1:
        raise ConfigError(f"{what} must be a positive count like 50M or 2.5G, not {text!r}")
    return count


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """A command's JSON summary, written whole then renamed."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tmp.replace(path)


def trusted_source(model: str, trust_model: bool, input: str | None, arch: str | None):
    """``model`` as given, or — with --trust-model — already loaded with that permission (the API takes either)."""
    if not trust_model:
        return model
    from edgeopt.models import load_model

    return load_model(model, input=input, arch=arch, trust_model=True)
