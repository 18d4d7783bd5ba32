"""Choosing among measured candidates: the Pareto front, the winner, the closest misses.

All three are pure functions of the records and the metric, so a resumed search that
holds the same records makes the same choice. The front trades latency against the
goal's quality metric, in whichever direction the metric improves.

Example:
    >>> from edgeopt.tasks import get_task
    >>> top1 = get_task("classification").main
    >>> def cand(key, ms, acc):
    ...     m = Measurement(latency_ms=ms, peak_rss_mb=90.0, size_mb=1.0, threads=2, metrics={"top1": acc})
    ...     return Candidate(key=key, label=key, stage=1, status="ok", recipe={}, measurement=m)
    >>> records = [cand("a", 2.0, 0.99), cand("b", 1.0, 0.98), cand("c", 3.0, 0.97)]
    >>> [r.key for r in pareto_front(records, top1)]
    ['b', 'a']
    >>> choose(records, "latency", top1).key
    'b'

Latencies within ``LATENCY_TIE`` of the fastest count as equal (this machine cannot tell them
apart run to run), and the better quality, then the smaller artifact, wins among them:

    >>> [r.key for r in by_latency([cand("x", 1.00, 0.97), cand("y", 1.03, 0.99), cand("z", 1.2, 1.0)], top1)]
    ['y', 'x', 'z']
"""

from __future__ import annotations

from edgeopt.measure.measurement import Measurement
from edgeopt.search.candidate import Candidate
from edgeopt.tasks import Metric

LATENCY_TIE = 0.05  # relative: two p50s this close are equal within the run-to-run noise of timing
RUNOFF_WITHIN = 1.5  # candidates this close to the fastest are re-timed side by side before one is chosen
RUNOFF_MAX = 4


def measured(records: list[Candidate]) -> list[Candidate]:
    return [r for r in records if r.ok]


def quality(record: Candidate, metric: Metric) -> float:
    """The record's value of ``metric``, turned so that higher is better."""
    return -metric.sort_key(record.measurement.metric(metric.name))


def pareto_front(records: list[Candidate], metric: Metric) -> list[Candidate]:
    """Candidates no other is at least as fast and as good as (and better in one), by latency."""
    ok = measured(records)
    front = [r for r in ok if not any(_dominates(o, r, metric) for o in ok if o is not r)]
    return sorted(front, key=lambda r: (r.latency_ms, -quality(r, metric), r.key))


def _dominates(a: Candidate, b: Candidate, metric: Metric) -> bool:
    qa, qb = quality(a, metric), quality(b, metric)
    return a.latency_ms <= b.latency_ms and qa >= qb and (a.latency_ms < b.latency_ms or qa > qb)


def by_latency(records: list[Candidate], metric: Metric) -> list[Candidate]:
    """Fastest first, where latencies within ``LATENCY_TIE`` of the fastest tie and are ordered by
    quality (better first), then size (smaller first)."""
    if not records:
        return []
    fastest = min(r.latency_ms for r in records)

    def key(r: Candidate):
        tied = r.latency_ms <= fastest * (1 + LATENCY_TIE)
        return (not tied, 0.0 if tied else r.latency_ms, -quality(r, metric), r.measurement.size_mb, r.latency_ms, r.key)

    return sorted(records, key=key)


def runoff_contenders(records: list[Candidate], metric: Metric) -> list[Candidate]:
    """Of ``records`` (those a decision ranks by latency), the ones close enough to the fastest
    (``RUNOFF_WITHIN``) that one timing each cannot rank them: the fastest ``RUNOFF_MAX``."""
    ranked = by_latency([r for r in records if r.ok], metric)
    if not ranked:
        return []
    fastest = min(r.latency_ms for r in ranked)
    return [r for r in ranked if r.latency_ms <= fastest * RUNOFF_WITHIN][:RUNOFF_MAX]


def choose(records: list[Candidate], priority: str, metric: Metric) -> Candidate | None:
    """The best candidate meeting every goal, by the priority; None when none does."""
    passing = [r for r in records if r.meets_goals]
    if not passing:
        return None
    if priority == "accuracy":
        return min(passing, key=lambda r: (-quality(r, metric), r.latency_ms, r.key))
    if priority == "memory":
        on_a_part = all(r.measurement.arena_kb is not None for r in passing)  # one unit for all, never a mix
        return min(passing, key=lambda r: (*memory_of(r.measurement, on_a_part), r.latency_ms, r.key))
    return by_latency(passing, metric)[0]


def memory_of(m: Measurement, on_a_part: bool) -> tuple[float | None, float | None]:
    """What memory-limited ranks by: on a microcontroller (every candidate a TFLM artifact) the arena and the
    flash; otherwise the process's peak memory and the artifact's size."""
    return (m.arena_kb, m.flash_kb) if on_a_part else (m.peak_rss_mb, m.size_mb)


def closest(records: list[Candidate], count: int = 3) -> list[Candidate]:
    """The candidates nearest to meeting the goals (smallest shortfall first)."""
    return sorted(measured(records), key=lambda r: (r.shortfall, r.latency_ms, r.key))[:count]
