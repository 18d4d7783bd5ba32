"""Options and option parsing shared by subcommands (declarations only: the work is in edgeopt.api).

An option that sets a config field takes its default from that config (``PruneConfig().ratio``,
``QUANTIZATION.preset``), so every default lives in one place: the config dataclass, which the
Python API takes too. ``tests/unit/test_cli_defaults.py`` holds every command to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from edgeopt.core import trust
from edgeopt.api import RESUME
from edgeopt.core.errors import ConfigError
from edgeopt.core.quantization import QuantizationConfig

QUANTIZATION = QuantizationConfig()  # the defaults of every INT8 option

InputOption = typer.Option(None, "--input", help="Input shape, batch first, e.g. 1x3x224x224 (inferred if omitted).")


def _vouch_for_arch(value: str | None) -> str | None:
    """What the user names on the command line is trusted: the architecture may be imported wherever a
    file names it in this run (a checkpoint's or an artifact's own record of it)."""
    if value:
        trust.grant(value)
    return value


def _vouch_for_files(value: bool) -> bool:
    if value:
        trust.trust_programs()
    return value


def _vouch_for_plugins(values: list[str] | None) -> list[str] | None:
    for module in values or []:
        trust.load_plugin(module)  # registers its passes and tasks
    return values


ArchOption = typer.Option(None, "--arch", callback=_vouch_for_arch, help="The architecture: for a weights-only checkpoint (e.g. torchvision:resnet18, mypkg.nets:build), and the one import path a file may name in this run (edgeopt imports no code a file names unless you name it here).")
ThreadsOption = typer.Option(None, "--threads", help="Intra-op threads for every backend (default: all usable CPUs).")
TrustModelOption = typer.Option(False, "--trust-model", callback=_vouch_for_files, help="Trust the model files like code: TorchScript and .pt2 programs load (they run code when loaded), and import paths they name resolve; only for files you made or trust.")
PluginOption = typer.Option([], "--plugin", callback=_vouch_for_plugins, help="A module defining passes or tasks (imported, so they register; repeatable): a recipe's pass, a checkpoint's or an artifact's task. A file's own record of it is not enough: edgeopt imports no module a file names.")
AgentOption = typer.Option(None, "--agent", help="URL of an `edgeopt agent` on the device (http://HOST:8470): measure there, not here.")
AgentTokenOption = typer.Option(None, "--agent-token", envvar="EDGEOPT_AGENT_TOKEN", show_envvar=True, help="The agent's token (better: set EDGEOPT_AGENT_TOKEN, which stays out of the process list).")
CalibrateOption = typer.Option(None, "--calibrate", help="Calibration data for INT8: digits, a .npz file or an ImageFolder tree.")
MaxDropOption = typer.Option(QUANTIZATION.max_drop, "--max-accuracy-drop", help="Accuracy-aware INT8: most points of the main metric (top-1) to lose, held on part of the training split.")
PresetOption = typer.Option(QUANTIZATION.preset, "--preset", help="NNCF preset: performance (symmetric) | mixed.")
CalibrationMethodOption = typer.Option(QUANTIZATION.calibration_method, "--calibration-method", help="ONNX Runtime calibrator: minmax | entropy | percentile.")
KeepFloatOption = typer.Option(list(QUANTIZATION.keep_float), "--keep-float", help="A layer to keep in float, by the backend's name for it (repeatable).")
SeedOption = typer.Option(0, "--seed")
ResumeOption = typer.Option(RESUME, "--resume", help="Continue an interrupted run from its last epoch checkpoint.")


def calibration_samples_option(default: int = QUANTIZATION.calibration_samples) -> Any:
    return typer.Option(default, "--calibration-samples", help="Stratified calibration images taken from its training split.")


# Fine-tuning options shared by train, prune and distill; each command gives its config's default
def epochs_option(default: int, help: str | None = None) -> Any:
    return typer.Option(default, "--epochs", help=help)


def lr_option(default: float, help: str | None = None) -> Any:
    return typer.Option(default, "--lr", help=help)


def optimizer_option(default: str) -> Any:
    return typer.Option(default, "--optimizer", help="sgd | adamw")


def schedule_option(default: str) -> Any:
    return typer.Option(default, "--schedule", help="cosine | onecycle | constant")


def weight_decay_option(default: float) -> Any:
    return typer.Option(default, "--weight-decay")


def batch_size_option(default: int) -> Any:
    return typer.Option(default, "--batch-size")


def temperature_option(default: float) -> Any:
    return typer.Option(default, "--temperature", help="Distillation temperature T.")


def alpha_option(default: float) -> Any:
    return typer.Option(default, "--alpha", help="Weight of the label loss; 1 - alpha goes to the teacher's soft targets.")

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
