"""``edgeopt build``: rebuild a candidate from its recipe.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeopt.cli.app import app
from edgeopt.report.console import make_console


@app.command("build")
def build_command(
    recipe: Path = typer.Argument(..., help="A recipe.toml written by `edgeopt optimize` (OUT/best.toml, or candidates/*/recipe.toml)."),
    out: Path = typer.Option(..., "--out", "-o", help="The artifact folder to create."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where intermediate models and training checkpoints go (default: OUT.build); rerun to resume."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    threads: Optional[int] = typer.Option(None, "--threads"),
) -> None:
    """Apply the recipe's steps (seeded, so the same weights on the same machine) and export the artifact."""
    from edgeopt.search.builder import BuildContext, build
    from edgeopt.search.recipe import Recipe

    console = make_console()
    plan = Recipe.read(recipe)
    console.print(f"building {plan.hash}: {plan.label}", soft_wrap=True, markup=False)
    context = BuildContext.create(plan, workdir or out.with_name(out.name + ".build"), threads)
    _, artifact = build(plan, context, out, overwrite=force)
    console.print(f"[green]built[/] {artifact.path} ({artifact.backend} {artifact.precision}, "
                  f"{artifact.size_bytes / 2**20:.2f} MB, parity {'passed' if artifact.parity['passed'] else 'failed'})",
                  soft_wrap=True)
