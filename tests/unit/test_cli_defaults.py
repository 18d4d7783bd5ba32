"""A default lives in one place: every CLI option that sets a config field defaults to that field's default.

Read through typer's own introspection (``typer.main.get_command`` → click parameters), against an
explicit map of command → (config, {option parameter: field}). A mapped option or field that no
longer exists fails here too, and so does a command nobody has classified.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import click
import pytest
import typer.main

from edgeopt.agent.client import AgentTarget
from edgeopt.api import RESUME
from edgeopt.cli import app
from edgeopt.cli.common import parse_int_list
from edgeopt.cli.optimize import _fractions
from edgeopt.measure.latency import TimingConfig
from edgeopt.passes.distill import DistillConfig
from edgeopt.passes.prune import PruneConfig
from edgeopt.passes.qat import QatConfig
from edgeopt.passes.sparsify import SparsifyConfig
from edgeopt.passes.train import TrainConfig
from edgeopt.pipeline.bench import BenchConfig
from edgeopt.pipeline.exits import ExitsConfig
from edgeopt.pipeline.ladder import LadderConfig
from edgeopt.passes.early_exit import EarlyExitConfig
from edgeopt.pipeline.recipe import ExportConfig
from edgeopt.core.quantization import QuantizationConfig
from edgeopt.search import ClusterConfig, Goals, SearchConfig, SearchSpace, parse_duration

Field = str | tuple[str, Callable[[Any], Any]]  # a field (dotted into a nested config), or a field and how the option's text reads


def _commas(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part for part in text.split(",") if part)


def _mb(value: float) -> int:
    return int(value * 2**20)


FINE_TUNE = {name: f"fine_tune.{name}" for name in ("epochs", "lr", "optimizer", "schedule", "weight_decay",
                                                     "batch_size", "temperature", "alpha")}
QUANTIZATION = {"calibration_samples": "calibration_samples", "max_accuracy_drop": "max_drop", "preset": "preset",
                "calibration_method": "calibration_method", "keep_float": "keep_float"}


def _serve() -> list[tuple[Any, dict[str, Field]]]:
    from edgeopt.serve.app import ServeSettings

    return [(ServeSettings(), {"max_batch": "max_batch", "max_queue_delay_ms": "max_queue_delay_ms",
                               "max_queue": "max_queue", "request_timeout": "request_timeout_s",
                               "body_timeout": "body_timeout_s", "max_body_mb": ("max_body_bytes", _mb),
                               "max_pixels": "max_pixels", "poll_seconds": "poll_seconds",
                               "drain_seconds": "drain_seconds", "target_p99_ms": "target_p99_ms",
                               "instances": "instances"})]


def _stream() -> list[tuple[Any, dict[str, Field]]]:
    from edgeopt.stream.pipeline import StreamConfig

    return [(StreamConfig(), {"realtime": "realtime", "fps_cap": "fps_cap", "max_frames": "max_frames",
                              "duration": "duration", "score_threshold": "score_threshold",
                              "no_track": ("track", lambda no: not no), "annotate": "annotate",
                              "line": "line", "reconnect_attempts": "reconnect_attempts", "threads": "threads",
                              "target_ms": "target_ms", "track_threshold": "track_threshold"})]


def _agent() -> list[tuple[Any, dict[str, Field]]]:
    from edgeopt.agent.app import AgentSettings

    return [(AgentSettings("a-token-of-8", Path("store")), {
        "name": "name", "kind": "kind", "max_upload_mb": ("max_upload_bytes", _mb), "memory_cap_mb": "memory_cap_mb",
        "timeout": "timeout_s", "body_timeout": "body_timeout_s"})]


def _federate_server() -> list[tuple[Any, dict[str, Field]]]:
    from edgeopt.federated.settings import FederationSettings

    rounds = FederationSettings("model", "out").rounds
    return [(FederationSettings("model", "out"), {"data": ("data", lambda text: text or ""),
                                                  "rounds": ("rounds", lambda given: rounds if given is None else given),
                                                  **{name: name for name in (
        "proximal_mu",
        "strategy", "clients_per_round", "min_clients", "epochs", "lr", "optimizer", "schedule",
        "batch_size", "distill", "server_lr", "round_timeout", "seed", "round_schedule")},
                                                  "bn_stats": "bn_statistics"})]


def _site() -> Any:
    from edgeopt.federated.settings import SiteSettings

    return SiteSettings("data")


# command -> what makes its configs (each at its defaults) and which option sets which field
CONFIGS: dict[str, Callable[[], list[tuple[Any, dict[str, Field]]]]] = {
    "train": lambda: [(TrainConfig(), {name: name for name in (
        "epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "augment", "patience", "seed")})],
    "prune": lambda: [
        (PruneConfig(), {"ratio": "ratio", "target_macs": "target_macs", "importance": "importance",
                         "global_pruning": "global_pruning", "round_to": "round_to", "steps": "steps",
                         "ignore": "ignore", "distill": "fine_tune.distill", **FINE_TUNE}),
        (SparsifyConfig(), {"distill": "fine_tune.distill", **FINE_TUNE}),  # --sparsity fine-tunes with the same options
    ],
    "distill": lambda: [(DistillConfig(), {"input_size": "input_size", "hint": "hints", "hint_weight": "hint_weight",
                                           **FINE_TUNE})],
    "quantize": lambda: [(QuantizationConfig(), QUANTIZATION),
                         (QatConfig(), {"epochs": "fine_tune.epochs", "lr": "fine_tune.lr"})],
    "export": lambda: [(ExportConfig(), {"precision": "precision"}), (QuantizationConfig(), QUANTIZATION)],
    "bench": lambda: [
        (BenchConfig(), {"backends": ("backends", _commas), "batch": ("batches", lambda t: parse_int_list(t, "--batch")),
                         "precision": ("precisions", _commas), "threads": "threads"}),
        (TimingConfig(), {"iters": "min_iters", "seconds": "min_seconds", "warmup": "warmup"}),
        (QuantizationConfig(), {"calibration_samples": "calibration_samples"}),
    ],
    "optimize": lambda: [
        (Goals(), {"max_latency_ms": "max_latency_ms", "max_sustained_p99_ms": "max_sustained_p99_ms",
                   "max_size_mb": "max_size_mb", "max_memory_mb": "max_memory_mb", "max_accuracy_drop": "max_drop",
                   "metric": "metric", "priority": "priority", "max_sram_kb": "max_sram_kb",
                   "max_flash_kb": "max_flash_kb"}),
        (SearchSpace(), {"backends": ("backends", _commas), "int8": "int8",
                         "prune_ratios": ("prune_ratios", lambda t: _fractions(t, "--prune-ratios")),
                         "resolutions": ("resolutions", lambda t: _fractions(t, "--resolutions")),
                         "students": ("students", lambda t: None if t == "auto" else _commas(t)),
                         "qat": "qat", "epochs": "epochs", "qat_epochs": "qat_epochs",
                         "calibration_samples": "calibration_samples"}),
        (SearchConfig("model", "data", Path("out")), {
            "device": "device", "budget": ("budget_s", parse_duration), "sustained_seconds": "sustained_s",
            "resume": "resume", "force": "force", "arch": "arch", "seed": "seed", "agent": ("agent", lambda urls: urls[0] if urls else None),
            "measurements": "measurements", "cluster": "cluster"}),
        (AgentTarget("http://device:8470", "token"), {"agent_retries": "retries"}),
        (ClusterConfig("auto"), {"cluster_cpus": "cpus", "cluster_retries": "retries"}),
    ],
    "ladder": lambda: [(LadderConfig(), {"batch": ("batches", lambda t: tuple(parse_int_list(t, "--batch"))),
                                         "min_speedup": "min_speedup", "max_rungs": "max_rungs", "threads": "threads",
                                         "keep_order": "keep_order"})],
    "exits": lambda: [(EarlyExitConfig(), {"head_width": "head_width", "epochs": "fine_tune.epochs",
                                           "lr": "fine_tune.lr",
                                           "cuts": ("cuts", lambda t: tuple(c for c in (t or "").split(",") if c))}),
                      (ExitsConfig(), {"backend": "backend", "threads": "threads",
                                       "budgets": ("budgets", lambda t: tuple(float(b) for b in t.split(",")))})],
    "federate server": _federate_server,
    "federate client": lambda: [(_site(), {name: name for name in ("dp_clip", "dp_epsilon", "dp_delta", "threads")})],
    "serve": _serve,
    "stream": _stream,
    "agent": _agent,
}
# Commands none of whose options sets a config field (run-level options, paths, presentation).
WITHOUT_CONFIG = {"backends", "build", "demo", "devices", "eval", "federate adapt", "inspect", "pack", "predict", "profile", "unpack"}
# --resume: one default, edgeopt.api.RESUME (command -> its function in edgeopt.api)
RESUMABLE = {"train": "train", "prune": "prune", "distill": "distill", "quantize": "quantize", "optimize": "optimize",
             "exits": "early_exits"}


@lru_cache(maxsize=1)
def _commands() -> dict[str, click.Command]:
    """Every command by its name; a group's (``federate``) as ``group command``."""
    commands = {}
    for name, command in typer.main.get_command(app).commands.items():
        inner = command.commands if isinstance(command, click.Group) else {}
        commands.update({f"{name} {sub}": c for sub, c in inner.items()} if inner else {name: command})
    return commands


def _options(command: str) -> dict[str, click.Parameter]:
    return {param.name: param for param in _commands()[command].params}


def _field_default(config: Any, path: str) -> Any:
    """The default at ``path`` ("fine_tune.lr") of ``config``, failing when a field on the way is gone."""
    value = config
    for name in path.split("."):
        assert dataclasses.is_dataclass(value) and name in {f.name for f in dataclasses.fields(value)}, (
            f"{type(value).__name__} has no field {name!r} (mapped as {path!r})")
        value = getattr(value, name)
    return value


def _pairs() -> list[tuple[str, Any, str, Field]]:
    return [(command, config, option, field) for command, make in CONFIGS.items()
            for config, mapping in make() for option, field in mapping.items()]


def _id(pair: tuple[str, Any, str, Field]) -> str:
    command, config, option, field = pair
    return f"{command}--{option}->{type(config).__name__}.{field if isinstance(field, str) else field[0]}"


PAIRS = _pairs()


def test_every_command_is_mapped_or_declared_without_config():
    commands = set(_commands())
    assert not commands - set(CONFIGS) - WITHOUT_CONFIG, "classify these commands here"
    assert not (set(CONFIGS) | WITHOUT_CONFIG) - commands, "these commands no longer exist"
    assert not set(CONFIGS) & WITHOUT_CONFIG


@pytest.mark.parametrize("pair", PAIRS, ids=[_id(pair) for pair in PAIRS])
def test_option_default_is_the_config_default(pair):
    command, config, option, field = pair
    options = _options(command)
    assert option in options, f"`edgeopt {command}` has no option parameter {option!r} any more; update the map"
    path, read = (field, None) if isinstance(field, str) else field
    expected = _field_default(config, path)
    default = options[option].default
    if read is not None:
        default = read(default)
    if isinstance(default, list):  # repeatable options default to a list, configs hold tuples
        default = tuple(default)
    assert default == expected, (f"`edgeopt {command}` --{option} defaults to {default!r}, but "
                                 f"{type(config).__name__}.{path} to {expected!r}: read it from the config")


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_an_option_named_like_a_field_of_its_configs_is_mapped(command):
    """A new option that sets a config field, forgotten in the map above, is caught by its name."""
    mapped = {option for option_command, _, option, _ in PAIRS if option_command == command}
    fields = {f.name for config, _ in CONFIGS[command]() for f in dataclasses.fields(config)
              if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    optional = {name for name, param in _options(command).items() if not param.required}
    assert not (optional & fields) - mapped


@pytest.mark.parametrize("command", RESUMABLE)
def test_resume_has_one_default(command):
    import inspect

    import edgeopt.api

    assert _options(command)["resume"].default is RESUME is False
    assert inspect.signature(getattr(edgeopt.api, RESUMABLE[command])).parameters["resume"].default is RESUME


def test_the_map_fails_on_a_field_that_is_gone():
    with pytest.raises(AssertionError, match="no field 'ratios'"):
        _field_default(PruneConfig(), "ratios")
    with pytest.raises(AssertionError, match="no field 'learning_rate'"):
        _field_default(PruneConfig(), "fine_tune.learning_rate")
