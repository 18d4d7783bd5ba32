"""``edgeopt inspect``: verify an artifact folder and show its manifest."""

from __future__ import annotations

import json

from typing import List

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import PluginOption
from edgeopt.report.console import make_console


@app.command("inspect")
def inspect_command(
    artifact: str = typer.Argument(..., help="An artifact folder written by `edgeopt export`."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
    plugin: List[str] = PluginOption,
) -> None:
    """Check every file of ARTIFACT against its sha256 and summarize what it is."""
    from edgeopt.core.artifact import Artifact

    art = Artifact.open(artifact)
    if as_json:
        print(json.dumps(art.manifest, indent=2))
        return
    spec = art.input_spec
    parity = art.parity or {}
    console = make_console()
    console.print(f"[green]verified[/] {art.path}: {len(art.manifest['files'])} file(s), sha256 ok", soft_wrap=True)
    console.print(f"backend {art.backend} · precision {art.precision} · {art.size_bytes / 2**20:.2f} MB · task {art.manifest.get('task')}")
    console.print(f"input {spec.name} {'x'.join(map(str, spec.shape))} {spec.dtype}"
                  f"{' (dynamic batch' + (f' ≤ {spec.max_batch})' if spec.max_batch else ')') if spec.dynamic_batch else ''}")
    console.print("outputs " + ", ".join(f"{o.name} {list(o.shape)}" for o in art.outputs))
    if parity:
        console.print(f"parity max|Δ| {parity['max_abs_diff']:.1e} of output scale · top-1 {parity['top1_agreement']}")
    console.print(f"source {art.manifest.get('source')} · built with {art.manifest.get('versions')}", soft_wrap=True)
