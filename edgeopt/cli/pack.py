"""``edgeopt pack`` / ``unpack``: an artifact as one file to carry to a device, and back, checked."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeopt.cli.app import app


@app.command("pack")
def pack_command(
    artifact: Path = typer.Argument(..., help="An artifact folder (verified before packing)."),
    out: Path = typer.Option(..., "--out", "-o", help="The bundle to write, e.g. model.edgeopt."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
) -> None:
    """Pack ARTIFACT into one uncompressed tar (its manifest and the files it lists) for `unpack`, an agent or a copy."""
    import os

    from edgeopt.core.bundle import pack
    from edgeopt.core.errors import ConfigError

    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another --out or pass --force to replace it")
    data = pack(artifact)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, out)
    typer.echo(f"{out}: {len(data) / 2**20:.2f} MB")


@app.command("unpack")
def unpack_command(
    bundle: Path = typer.Argument(..., help="A bundle made by `edgeopt pack`."),
    out: Path = typer.Option(..., "--out", "-o", help="The artifact folder to create."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
    max_mb: float = typer.Option(512.0, "--max-mb", help="Largest bundle (all members together) accepted."),
) -> None:
    """Check BUNDLE member by member (plain names, regular files, sizes, sha256 against its manifest; no pickles or
    TorchScript) and write it as the artifact folder OUT; a refused bundle writes nothing."""
    from edgeopt.core.bundle import BundleLimits, unpack

    artifact = unpack(bundle, out, BundleLimits(max_bytes=int(max_mb * (1 << 20))), overwrite=force)
    typer.echo(f"{out}: {artifact.backend} {artifact.precision}, {len(artifact.manifest['files'])} files, verified")
