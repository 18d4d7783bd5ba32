"""RESULTS.md's marked sections: every benchmark rewrites only the part between its own two markers."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(start: str, end: str, body: str, title: str | None = None, path: Path = RESULTS) -> None:
    """Put ``body`` between the ``start`` and ``end`` markers of ``path``; when the markers are not there yet
    and a ``title`` is given, first append a ``## title`` section holding them."""
    text = path.read_text()
    if start not in text and title is not None:
        text += f"\n## {title}\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    path.write_text(f"{head}{start}\n{body}{end}{rest.partition(end)[2]}")
