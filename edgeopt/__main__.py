"""``python -m edgeopt`` runs the command line."""

from edgeopt.cli import main

if __name__ == "__main__":
    main()
