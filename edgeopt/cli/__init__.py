"""The ``edgeopt`` command line: one thin file per subcommand, errors as one line."""

from __future__ import annotations

import sys

from edgeopt.cli import (  # noqa: F401  (registers the subcommands)
    agent,
    backends,
    bench,
    build,
    demo,
    devices,
    distill,
    eval,
    exits,
    export,
    federate,
    inspect,
    ladder,
    optimize,
    pack,
    predict,
    profile,
    prune,
    quantize,
    serve,
    stream,
    train,
)
from edgeopt.cli.app import app
from edgeopt.core.errors import EdgeoptError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a user error prints one ``error:`` line and exits 1, without a traceback.

    Usage errors, --help and Ctrl-C are handled by typer itself (standalone mode).
    """
    try:
        app(args=argv)
    except EdgeoptError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
