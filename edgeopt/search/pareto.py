"""Choosing among measured candidates: the Pareto front, the winner, the closest misses.

All three are pure functions of the records, so a resumed search that holds the same
records makes the same choice.

Example:
    >>> records = [{"key": "a", "status": "ok", "latency_ms": 2.0, "top1": 0.99, "violations": []},
    ...            {"key": "b", "status": "ok", "latency_ms": 1.0, "top1": 0.98, "violations": []},
    ...            {"key": "c", "status": "ok", "latency_ms": 3.0, "top1": 0.97, "violations": []}]
    >>> [r["key"] for r in pareto_front(records)]
    ['b', 'a']
    >>> choose(records, "latency")["key"]
    'b'
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def measured(records: list[Record]) -> list[Record]:
    return [r for r in records if r.get("status") == "ok"]


def pareto_front(records: list[Record]) -> list[Record]:
    """Candidates no other is at least as fast and as accurate as (and better in one), by latency."""
    ok = measured(records)
    front = [r for r in ok if not any(_dominates(o, r) for o in ok if o is not r)]
    return sorted(front, key=lambda r: (r["latency_ms"], -r["top1"], r["key"]))


def _dominates(a: Record, b: Record) -> bool:
    return (a["latency_ms"] <= b["latency_ms"] and a["top1"] >= b["top1"]
            and (a["latency_ms"] < b["latency_ms"] or a["top1"] > b["top1"]))


def _priority_key(priority: str):
    if priority == "accuracy":
        return lambda r: (-r["top1"], r["latency_ms"], r["key"])
    if priority == "memory":
        return lambda r: (r.get("peak_rss_mb") or 0.0, r.get("size_mb") or 0.0, r["latency_ms"], r["key"])
    return lambda r: (r["latency_ms"], -r["top1"], r["key"])


def choose(records: list[Record], priority: str) -> Record | None:
    """The best candidate meeting every goal, by the priority; None when none does."""
    passing = [r for r in measured(records) if not r["violations"]]
    return min(passing, key=_priority_key(priority)) if passing else None


def closest(records: list[Record], count: int = 3) -> list[Record]:
    """The candidates nearest to meeting the goals (smallest shortfall first)."""
    return sorted(measured(records), key=lambda r: (r.get("shortfall", 0.0), r["latency_ms"], r["key"]))[:count]
