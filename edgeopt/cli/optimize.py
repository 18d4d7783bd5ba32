"""``edgeopt optimize``: search for the best artifact under goals, on a device, within a budget (via edgeopt.api.optimize)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import AgentTokenOption, ArchOption, PluginOption, SeedOption, calibration_samples_option
from edgeopt.core.errors import ConfigError
from edgeopt.report.console import make_console
from edgeopt.search import AgentTarget, ClusterConfig, Goals, SearchConfig, SearchSpace

GOAL_NOT_MET_EXIT = 3  # distinct from 1 (a usage or input error): the search ran, no candidate met the goals
GOALS, SPACE = Goals(), SearchSpace()  # with SearchConfig's and AgentTarget's, every default below


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip() and part.strip() != "none")


def _listed(values: tuple | None, none: str = "none") -> str:
    """A default as the option spells it: 0.5,0.75 (``none`` for nothing)."""
    return none if values is None else ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) or "none"


def _fractions(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in _split(text))
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated fractions like 0.5,0.75 (or none); got {text!r}") from None


@app.command("optimize")
def optimize_command(
    model: str = typer.Argument(..., help="The trained baseline: a .safetensors from `edgeopt train`, or any PyTorch model source."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file or an ImageFolder tree: calibrate and fine-tune on its train split, score on its test split."),
    out: Path = typer.Option(Path("out/optimize"), "--out", "-o", help="The search folder: journal, candidates, best/, report.html."),
    device: str = typer.Option(SearchConfig.device, "--device", help="Target device profile (see `edgeopt devices`); not this machine: latencies are estimates."),
    max_latency_ms: Optional[float] = typer.Option(GOALS.max_latency_ms, "--max-latency-ms", help="Goal: p50 latency at batch 1."),
    max_sustained_p99_ms: Optional[float] = typer.Option(GOALS.max_sustained_p99_ms, "--max-sustained-p99-ms", help="Goal: p99 of the last minute of --sustained-seconds back to back (throttling shows here)."),
    sustained_seconds: float = typer.Option(SearchConfig.sustained_s, "--sustained-seconds", help="How long each candidate runs back to back when --max-sustained-p99-ms is set."),
    max_size_mb: Optional[float] = typer.Option(GOALS.max_size_mb, "--max-size-mb", help="Goal: artifact size."),
    max_memory_mb: Optional[float] = typer.Option(GOALS.max_memory_mb, "--max-memory-mb", help="Goal: peak memory of the process running it."),
    max_sram_kb: Optional[float] = typer.Option(GOALS.max_sram_kb, "--max-sram-kb", help="Goal (a microcontroller): the tensor arena TFLM measures. A microcontroller --device sets it from its SRAM."),
    max_flash_kb: Optional[float] = typer.Option(GOALS.max_flash_kb, "--max-flash-kb", help="Goal (a microcontroller): flatbuffer plus TFLM runtime in flash. A microcontroller --device sets it from its flash."),
    max_accuracy_drop: float = typer.Option(GOALS.max_drop, "--max-accuracy-drop", help="Goal: points of the main metric (top-1 for a classifier) the candidate may lose to the baseline."),
    metric: Optional[str] = typer.Option(GOALS.metric, "--metric", help="The metric the drop goal and the Pareto front use (default: the task's main one, e.g. top1; or top5)."),
    priority: str = typer.Option(GOALS.priority, "--priority", help="latency | accuracy | memory: which candidate wins among those meeting the goals."),
    budget: str = typer.Option(f"{SearchConfig.budget_s / 60:g}m", "--budget", help="Wall-clock search time, e.g. 90s, 30m, 2h: a long step inside a candidate stops at it (the candidate is journaled as stopped); carried across --resume."),
    resume: bool = typer.Option(SearchConfig.resume, "--resume", help="Continue the search in --out; finished candidates are not run again."),
    force: bool = typer.Option(SearchConfig.force, "--force", help="Delete a previous search in --out and start over."),
    backends: Optional[str] = typer.Option(None if SPACE.backends is None else _listed(SPACE.backends), "--backends", help="Comma-separated backends to try (default: every one that runs here and on the device)."),
    int8: bool = typer.Option(SPACE.int8, "--int8/--no-int8", help="Try INT8 (PTQ, accuracy-aware, QAT)."),
    prune_ratios: str = typer.Option(_listed(SPACE.prune_ratios), "--prune-ratios", help="Channel-pruning ratios to try (or none)."),
    resolutions: str = typer.Option(_listed(SPACE.resolutions), "--resolutions", help="Lower input sizes to distil to, as fractions (or none)."),
    students: str = typer.Option(_listed(SPACE.students, none="auto"), "--students", help="Lighter architectures to distil into (or none); auto: the task's (MobileNetV2 for a classifier, a half-width SSDlite for a detector; for a microcontroller, its small ReLU CNNs and MobileNetV2 at width 0.35)."),
    qat: bool = typer.Option(SPACE.qat, "--qat/--no-qat", help="Try quantization-aware training."),
    epochs: int = typer.Option(SPACE.epochs, "--epochs", help="Fine-tuning epochs of each pruned/distilled candidate."),
    qat_epochs: int = typer.Option(SPACE.qat_epochs, "--qat-epochs"),
    calibration_samples: int = calibration_samples_option(SPACE.calibration_samples),
    agent: List[str] = typer.Option([], "--agent", help="URL of an `edgeopt agent` on the device (http://HOST:8470): measure there, not here. Repeat it for a farm: every candidate is timed on each device at once, and --device NAME (an agent's --name) names the one that decides (default: the first)."),
    agent_token: Optional[str] = AgentTokenOption,
    agent_retries: int = typer.Option(AgentTarget.retries, "--agent-retries", help="Tries after the first when the agent does not answer (waits double from 1 s); then the candidate is recorded as not measured, for --resume."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Build candidates on a Ray cluster (pip install 'edgeopt[ray]'): auto (the cluster this machine belongs to) or the head's HOST:PORT. Several build at once; each is scored and timed here (or on --agent), and this machine's Ray node must offer the cluster no CPUs (`ray start --head --num-cpus 0`)."),
    cluster_cpus: Optional[int] = typer.Option(ClusterConfig.cpus, "--cluster-cpus", help="CPUs each build declares to the cluster and trains with (default: the search's thread count, which keeps artifact bytes those of a local search)."),
    cluster_retries: int = typer.Option(ClusterConfig.retries, "--cluster-retries", help="Tries after the first of a build whose worker or node was lost; then it is recorded as failed."),
    measurements: Optional[Path] = typer.Option(None, "--measurements", help="The store of device measurements that corrects estimates (default ~/.cache/edgeopt/measurements, or EDGEOPT_MEASUREMENTS)."),
    ladder: int = typer.Option(0, "--ladder", help="Also write OUT/ladder: up to this many rungs from the Pareto front (the choice, then faster ones) for `edgeopt serve --target-p99-ms`."),
    arch: Optional[str] = ArchOption,
    seed: int = SeedOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Find the fastest (or most accurate, or smallest) artifact of MODEL that meets the goals.

    Measures every candidate on the device when --agent names its `edgeopt agent`, else here
    (latency with the device's thread count; for a device that is not this machine, an estimate
    corrected by earlier device measurements, with its interval), keeps the best so far in OUT/best, and writes
    OUT/report.html, report.md and results.json. Exits 3 when no candidate meets the goals.
    """
    from edgeopt.search import parse_duration

    goals = Goals(max_latency_ms=max_latency_ms, max_sustained_p99_ms=max_sustained_p99_ms, max_size_mb=max_size_mb, max_memory_mb=max_memory_mb,
                  max_drop=max_accuracy_drop, metric=metric, priority=priority, max_sram_kb=max_sram_kb,
                  max_flash_kb=max_flash_kb)
    space = SearchSpace(backends=_split(backends) if backends else None, int8=int8,
                        prune_ratios=_fractions(prune_ratios, "--prune-ratios"),
                        resolutions=_fractions(resolutions, "--resolutions"), students=None if students == "auto" else _split(students),
                        qat=qat and int8, epochs=epochs, qat_epochs=qat_epochs, calibration_samples=calibration_samples)
    targets = [AgentTarget(url, agent_token or "", retries=agent_retries) for url in agent]
    run_optimize(model, data, out, goals=goals, device=device, budget=parse_duration(budget), space=space,
                 resume=resume, force=force, arch=arch, seed=seed, agent=targets[0] if targets else None,
                 farm=targets[1:], sustained_s=sustained_seconds,
                 measurements=measurements, ladder=ladder,
                 cluster=ClusterConfig(cluster, cluster_cpus, cluster_retries) if cluster is not None else None)


def run_optimize(model: str, data: str, out: Path, console=None, **settings) -> None:
    """Run the search with its progress on the console, then the table and the decision."""
    from rich.text import Text

    from edgeopt.api import optimize
    from edgeopt.report.progress import SearchPrinter
    from edgeopt.report.search import print_outcome

    # Native libraries print to the stdout descriptor, which the search points at each candidate's
    # log while it builds; the console keeps a descriptor of its own.
    console = console or make_console(own_stdout=True)
    goals, budget_s = settings["goals"], settings["budget"]
    where = f"device {settings.get('device', 'host')}" + (f" measured by the agent at {settings['agent'].url}"
                                                           if settings.get("agent") else "")
    console.print(Text(f"optimize {model} on {data} · {where} · {goals.priority} first · "
                       f"budget {budget_s / 60:.3g} min", style="bold"), soft_wrap=True)
    outcome = optimize(model, data, out, on_event=SearchPrinter(console), **settings)
    print_outcome(outcome, console)
    console.print(f"report: {out / 'report.html'}  (also report.md, results.json; each candidate's build.log "
                  f"under {out / 'candidates'})", soft_wrap=True)
    if settings.get("ladder") and (out / "ladder").is_dir():
        console.print(f"ladder: {out / 'ladder'}  (serve it with `edgeopt serve {out / 'ladder'} --target-p99-ms MS`)",
                      soft_wrap=True)
    if outcome.chosen is None:
        raise typer.Exit(GOAL_NOT_MET_EXIT)
