"""``edgeopt bench``: every backend side by side, honestly measured (via edgeopt.api.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    ArchOption,
    CalibrateOption,
    CalibrationSamplesOption,
    InputOption,
    ThreadsOption,
    parse_int_list,
)
from edgeopt.report.console import make_console


@app.command("bench")
def bench_command(
    model: str = typer.Argument(..., help="Model source: torchvision:NAME, pkg.module:factory, ckpt.safetensors, model.onnx."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Comma-separated backends (default: all)."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, e.g. 1,8: latency at the first, throughput at each."),
    precision: str = typer.Option("fp32", "--precision", help="Precisions, e.g. fp32,int8 (INT8 needs --calibrate)."),
    iters: int = typer.Option(50, "--iters", help="Timed iterations, at least."),
    seconds: float = typer.Option(2.0, "--seconds", help="Timed seconds per batch size, at least."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed warm-up iterations."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write environment and results as JSON."),
    keep: Optional[Path] = typer.Option(None, "--keep-artifacts", help="Keep each backend's artifact under this folder."),
    sustained: Optional[float] = typer.Option(None, "--sustained", help="MODEL is an artifact folder: run it back to back for this many seconds (e.g. 600) and report p99 drift (last minute vs first), CPU temperature and throttling, or 'not available'."),
    calibrate: Optional[str] = CalibrateOption,
    calibration_samples: int = CalibrationSamplesOption,
    input: Optional[str] = InputOption,
    arch: Optional[str] = ArchOption,
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Compile MODEL for each backend, verify each against the FP32 reference, and time each in its own process."""
    if sustained is not None:
        return _sustained(model, sustained, threads, json_out)
    from edgeopt.api import bench
    from edgeopt.measure.latency import TimingConfig
    from edgeopt.pipeline.bench import BenchConfig
    from edgeopt.report.console import print_bench

    console = make_console()
    config = BenchConfig(
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()) if backends else None,
        batches=parse_int_list(batch, "--batch"),
        threads=threads,
        precisions=tuple(p.strip() for p in precision.split(",") if p.strip()),
        timing=TimingConfig(warmup=warmup, min_iters=iters, min_seconds=seconds),
    )
    with console.status("starting…") as status:
        report = bench(model, config, calibrate=calibrate, calibration_samples=calibration_samples, artifacts_dir=keep,
                       input=input, arch=arch, progress=lambda backend, stage: status.update(f"{backend}: {stage}…"))
    print_bench(report, console)
    if json_out:
        console.print(f"results written to {report.write_json(json_out)}")


def _sustained(artifact: str, seconds: float, threads: int | None, json_out: Path | None) -> None:
    """Minutes of back-to-back runs of one artifact at batch 1: does it slow down as the board heats up?"""
    import json

    from edgeopt.backends import open_session
    from edgeopt.measure.sustained import run_sustained

    session = open_session(artifact, threads=threads)
    example = session.input_spec.example(batch=1)
    session.run([example])  # warm-up: the first run allocates
    report = run_sustained(lambda: session.run([example]), seconds=seconds).to_dict()
    temperatures = report["temperatures"]
    shown = temperatures if isinstance(temperatures, str) else ", ".join(
        f"{zone} {min(values):.1f}→{values[-1]:.1f} °C" for zone, values in temperatures.items())
    make_console().print(
        f"{artifact}: {report['runs']} runs in {report['seconds']:.0f} s · p50 {report['p50_ms']:.3f} ms · p99 first "
        f"{report['window_s']:.0f} s {report['p99_first_ms']:.3f} ms, last {report['p99_last_ms']:.3f} ms "
        f"(drift {report['drift']:.2f}×) · temperature: {shown} · throttling: {report['throttled']} · "
        f"energy per inference: {report['energy_per_inference']}", soft_wrap=True, markup=False)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
