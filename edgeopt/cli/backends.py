"""``edgeopt backends``: which runtimes exist, and whether each can run here."""

from __future__ import annotations


from edgeopt.cli.app import app
from edgeopt.report.console import make_console


@app.command("backends")
def backends_command() -> None:
    """List every backend, its precisions, and whether it is available on this machine."""
    from rich.markup import escape
    from rich.table import Table

    from edgeopt.backends import all_backends

    table = Table(title="edgeopt backends")
    for header in ("backend", "available", "precisions", "takes", "runtime needs torch"):
        table.add_column(header)
    for backend in all_backends():
        reason = backend.unavailable_reason()
        caps = backend.capabilities
        table.add_row(
            backend.name,
            "[green]yes[/]" if reason is None else f"[yellow]no: {escape(reason)}[/]",
            ", ".join(caps.precisions),
            ", ".join(caps.sources),
            "yes" if caps.runtime_needs_torch else "no",
        )
    make_console().print(table)
