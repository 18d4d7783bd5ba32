"""``edgeopt profile``: where the time goes, operator by operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, TYPE_CHECKING

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, InputOption, PluginOption, ThreadsOption, TrustModelOption
from edgeopt.report.console import make_console

if TYPE_CHECKING:
    from rich.table import Table


def _runtime_table(title: str, rows: list[dict], top: int) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for header, justify in (("layer", "left"), ("type", "left"), ("ms / run", "right")):
        table.add_column(header, justify=justify)
    for row in rows[:top]:
        table.add_row(row["name"], row["op_type"], f"{row['ms']:.3f}")
    return table


def _torch_table(summary: dict, top: int) -> Table:
    from rich.table import Table

    table = Table(title="torch.profiler · self CPU time per forward pass")
    for header, justify in (("operator", "left"), ("input shapes", "left"), ("calls", "right"),
                            ("self CPU ms", "right"), ("total CPU ms", "right")):
        table.add_column(header, justify=justify, overflow="fold")
    for row in summary["operators"][:top]:
        table.add_row(row["name"], row["input_shapes"], str(row["calls"]),
                      f"{row['self_cpu_ms']:.3f}", f"{row['cpu_total_ms']:.3f}")
    return table


@app.command("profile")
def profile_command(
    model: str = typer.Argument(..., help="A model source, or an artifact folder (ONNX Runtime / OpenVINO)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Also export to this backend and show its own per-layer profile."),
    out: Path = typer.Option(Path("edgeopt-profile"), "--out", help="Folder for the trace and profile.json."),
    iters: int = typer.Option(10, "--iters", help="Profiled forward passes."),
    top: int = typer.Option(20, "--top", help="Rows to show."),
    input: Optional[str] = InputOption,
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Operator table, FLOPs and parameters, and a trace for TensorBoard / chrome://tracing."""
    from edgeopt.core.artifact import MANIFEST, Artifact
    from edgeopt.backends import get_backend

    console = make_console()
    summary: dict = {}
    if (Path(model) / MANIFEST).is_file():
        artifact = Artifact.open(model)
        out.mkdir(parents=True, exist_ok=True)  # once the model is known good: a refusal leaves no folder
    else:
        from edgeopt.measure.profile import count_flops_and_params, torch_profile
        from edgeopt.models.sources import load_model

        loaded = load_model(model, input=input, arch=arch, trust_model=trust_model)
        out.mkdir(parents=True, exist_ok=True)
        artifact = None
        if loaded.kind == "torch":
            summary["flops"] = count_flops_and_params(loaded)
            with console.status("profiling the PyTorch model…"):
                summary["torch"] = torch_profile(loaded, out, iters=iters, threads=threads, top=max(top, 25))
            console.print(_torch_table(summary["torch"], top))
            f = summary["flops"]
            console.print(f"FLOPs {f['flops'] / 1e9:.3f} G ({f['macs'] / 1e9:.3f} GMACs) at batch {f['batch']} · "
                          f"parameters {f['params'] / 1e6:.3f} M")
            console.print(f"trace (TensorBoard / chrome://tracing): {summary['torch']['trace']}", soft_wrap=True)
        if backend and backend != "eager":
            from edgeopt.api import export

            with console.status(f"exporting to {backend}…"):
                artifact = export(loaded, backend, out / backend, threads=threads, force=True)
    if artifact is not None:
        with console.status(f"profiling with {artifact.backend}…"):
            rows = get_backend(artifact.backend).profile(artifact, out, iters=iters, threads=threads)
        summary["runtime"] = {"backend": artifact.backend, "layers": rows}
        console.print(_runtime_table(f"{artifact.backend} per-layer profile · ms per run", rows, top))
    (out / "profile.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"profile written to {out / 'profile.json'}")
