"""The typer application every subcommand file registers itself on."""

import typer

app = typer.Typer(
    name="edgeopt",
    help="Make a PyTorch model fast, small and still accurate on an edge device — and prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
