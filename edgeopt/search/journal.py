"""The search's memory on disk: one JSON line per finished candidate, appended and synced.

A killed search loses at most the candidate it was working on: on ``--resume`` every
candidate already in the journal is taken from it instead of being built and measured
again. A line cut short by the kill is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Journal:
    """Append-only records keyed by ``key`` (a recipe hash, or ``probe:<hash>``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a kill cut short
                self.records[record["key"]] = record

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["key"]] = record
        return record

    def elapsed_s(self) -> float:
        """Search time already spent on the journal's records (budget carried across resumes)."""
        return sum(r.get("elapsed_s", 0.0) for r in self.records.values())

    def candidates(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r.get("kind") == "candidate"]
