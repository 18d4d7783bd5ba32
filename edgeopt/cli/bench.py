"""``edgeopt bench``: every backend side by side, honestly measured (via edgeopt.api.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    AgentOption,
    AgentTokenOption,
    ArchOption,
    CalibrateOption,
    InputOption,
    PluginOption,
    ThreadsOption,
    TrustModelOption,
    calibration_samples_option,
    parse_int_list,
)
from edgeopt.measure.latency import TimingConfig
from edgeopt.pipeline.bench import BenchConfig
from edgeopt.report.console import make_console

BENCH = BenchConfig()  # every default below is this config's (its timing, TIMING, included)
TIMING = BENCH.timing


@app.command("bench")
def bench_command(
    model: str = typer.Argument(..., help="Model source: torchvision:NAME, pkg.module:factory, ckpt.safetensors, model.onnx."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Comma-separated backends (default: all)."),
    batch: str = typer.Option(",".join(map(str, BENCH.batches)), "--batch", help="Batch sizes, e.g. 1,8: latency at the first, throughput at each."),
    precision: str = typer.Option(",".join(BENCH.precisions), "--precision", help="Precisions, e.g. fp32,int8 (INT8 needs --calibrate)."),
    iters: int = typer.Option(TIMING.min_iters, "--iters", help="Timed iterations, at least."),
    seconds: float = typer.Option(TIMING.min_seconds, "--seconds", help="Timed seconds per batch size, at least."),
    warmup: int = typer.Option(TIMING.warmup, "--warmup", help="Untimed warm-up iterations."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write environment and results as JSON."),
    keep: Optional[Path] = typer.Option(None, "--keep-artifacts", help="Keep each backend's artifact under this folder."),
    sustained: Optional[float] = typer.Option(None, "--sustained", help="MODEL is an artifact folder: run it back to back for this many seconds (e.g. 600) and report p99 drift (last minute vs first), CPU temperature and throttling, or 'not available'."),
    agent: Optional[str] = AgentOption,
    agent_token: Optional[str] = AgentTokenOption,
    calibrate: Optional[str] = CalibrateOption,
    calibration_samples: int = calibration_samples_option(),
    input: Optional[str] = InputOption,
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Compile MODEL for each backend, verify each against the FP32 reference, and time each in its own process.

    With --agent, MODEL is an artifact folder, measured on the device the agent runs on."""
    timing = TimingConfig(warmup=warmup, min_iters=iters, min_seconds=seconds)
    if agent is not None:
        return _on_agent(model, agent, agent_token, parse_int_list(batch, "--batch"), timing, sustained, threads, json_out)
    if sustained is not None:
        return _sustained(model, sustained, threads, json_out)
    from edgeopt.api import bench
    from edgeopt.core.quantization import QuantizationConfig
    from edgeopt.report.console import print_bench

    console = make_console()
    config = BenchConfig(
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()) if backends else None,
        batches=parse_int_list(batch, "--batch"),
        threads=threads,
        precisions=tuple(p.strip() for p in precision.split(",") if p.strip()),
        timing=timing,
    )
    with console.status("starting…") as status:
        report = bench(model, config, calibrate=calibrate,
                       quantization=QuantizationConfig(calibration_samples=calibration_samples), artifacts_dir=keep,
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


def _on_agent(artifact: str, url: str, token: str | None, batches: tuple[int, ...], timing, sustained: float | None,
              threads: int | None, json_out: Path | None) -> None:
    """One artifact measured on the device an agent runs on, its outputs checked against this machine's."""
    import json

    from edgeopt.agent.client import AgentClient
    from edgeopt.agent.remote import measure_on_device
    from edgeopt.measure.process import MeasureConfig

    console = make_console()
    config = MeasureConfig(threads=threads, batches=batches, timing=timing, sustained_s=sustained or 0.0)
    with console.status(f"measuring {artifact} on {url}…"):
        result = measure_on_device(AgentClient(url, token or ""), Path(artifact), config)
    for line in remote_lines(artifact, result):
        console.print(line, soft_wrap=True, markup=False)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        console.print(f"results written to {json_out}")


def remote_lines(artifact: str, result: dict) -> list[str]:
    """What `bench --agent` prints: the device, then each figure it measured."""
    from edgeopt.agent.identity import label

    timing, parity = result["timing"], result["parity"]
    threads = result["threads"]
    lines = [f"{artifact} measured on {label(result['device'])} with {threads} thread{'s' if threads != 1 else ''}",
             f"  cold load {timing['load_ms']:.1f} ms · first call {timing['first_ms']:.2f} ms"]
    for key, row in timing["batches"].items():
        if "p50" in row:
            lines.append(f"  batch {key}: p50 {row['p50']:.3f} ms · p90 {row['p90']:.3f} · p99 {row['p99']:.3f} · "
                         f"{row['throughput']:.1f} samples/s · peak RSS {row['peak_rss_mb']:.0f} MB")
        else:
            lines.append(f"  batch {key}: {row.get('skipped')}")
    if timing.get("sustained"):
        s = timing["sustained"]
        lines.append(f"  sustained {s['seconds']:.0f} s: {s['runs']} runs, p99 of the first {s['window_s']:.0f} s "
                     f"{s['p99_first_ms']:.3f} ms, of the last {s['p99_last_ms']:.3f} ms (drift {s['drift']:.2f}x) · temperature: "
                     f"{'not available' if isinstance(s['temperatures'], str) else ', '.join(s['temperatures'])} · "
                     f"throttling: {s['throttled']} · energy per inference: {s['energy_per_inference']}")
    verdict = {True: "matches this machine", False: "DIFFERS from this machine", None: "not checked"}[parity["passed"]]
    detail = f"max abs diff {parity['max_abs_diff']:.2e} of output scale" if "max_abs_diff" in parity else parity.get("reason", "")
    lines.append(f"  outputs on the probe inputs: {verdict} ({detail})")
    return lines
