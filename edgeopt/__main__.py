"""``python -m edgeopt`` runs the command line."""

from edgeopt.cli import main

main()
