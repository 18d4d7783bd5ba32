"""``edgeopt build``: rebuild a result from its recipe.toml (via edgeopt.api.build)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, PluginOption, TrustModelOption
from edgeopt.report.console import make_console


@app.command("build")
def build_command(
    recipe: Path = typer.Argument(..., help="A recipe.toml written by `edgeopt optimize` (OUT/best.toml, candidates/*/recipe.toml), `prune` or `distill`."),
    out: Path = typer.Option(..., "--out", "-o", help="The artifact folder to create."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where intermediate models and training checkpoints go (default: OUT.build); rerun to resume."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    arch: Optional[str] = ArchOption,
    plugin: List[str] = PluginOption,
    trust_model: bool = TrustModelOption,
) -> None:
    """Apply the recipe's passes (seeded, so the same weights on the same machine) and export the artifact.

    A recipe is a file: the import paths it names (a model factory, a plugin pass's module, a student) load
    only when known (torchvision, timm, edgeopt's own, installed plugins) or named here (--arch, --plugin)."""
    from edgeopt.api import build
    from edgeopt.pipeline.recipe import Recipe

    console = make_console()
    plan = Recipe.read(recipe)
    console.print(f"building {plan.hash}: {plan.label}", soft_wrap=True, markup=False)
    artifact = build(plan, out, workdir=workdir, force=force, threads=threads)
    console.print(f"[green]built[/] {artifact.path} ({artifact.backend} {artifact.precision}, "
                  f"{artifact.size_bytes / 2**20:.2f} MB, checked against the FP32 reference)", soft_wrap=True)
