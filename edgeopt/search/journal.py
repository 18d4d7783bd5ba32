"""The search's memory on disk: one JSON line per finished record, appended and synced.

A killed search loses at most the candidate it was working on: on ``--resume`` every
candidate already in the journal is taken from it instead of being built and measured
again. A line cut short by the kill is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeopt.search.candidate import RECORDS, Candidate, Record


class Journal:
    """Append-only records keyed by ``key`` (a recipe hash, ``probe:<hash>`` or ``fp32:<hash>``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, Record] = {}
        self._worked_s = 0.0  # every line's time, those a later line replaced (a stopped candidate, rebuilt) too
        self._clock_s = 0.0  # the search's clock at the latest stamped line: set-up and gaps included
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    data = json.loads(line)
                    record = RECORDS[data["kind"]].from_dict(data)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # the line a kill cut short
                self._count(record)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str | None) -> Record | None:
        return self.records.get(key) if key else None

    def add(self, record: Record) -> Record:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record.to_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._count(record)
        return record

    def _count(self, record: Record) -> None:
        previous = self.records.get(record.key)
        if getattr(previous, "status", None) == "ok":
            self._worked_s -= previous.elapsed_s  # a re-timed record's time includes its first measurement's
        self.records[record.key] = record
        self._worked_s += record.elapsed_s
        self._clock_s = max(self._clock_s, getattr(record, "finished_at_s", None) or 0.0)

    def elapsed_s(self) -> float:
        """Search time already spent (the budget carried across resumes): the search's clock when the last
        record was written, or for records without it, the sum of their times (replaced attempts included)."""
        return max(self._clock_s, self._worked_s)

    def candidates(self) -> list[Candidate]:
        return [r for r in self.records.values() if isinstance(r, Candidate)]
