"""Which rung of a ladder runs the next batch, so that answers keep arriving within a latency target.

A rung is a ladder's artifact or an early-exit model's threshold setting (accuracy first to fastest): the
controller sees only each rung's latency per batch size.

One controller serves ``edgeopt serve`` and ``edgeopt stream`` alike. Before each batch the caller
says what is waiting (``Backlog``: the age of the oldest waiting request, the rows waiting, and how
long the batch still running will take); the controller predicts, for each rung, when the last of
that work would complete — the oldest request's age plus the work at the rung's per-batch latency —
and picks the most accurate rung whose prediction fits the target less a safety margin
(Model-Switching, HotCloud'20; INFaaS, ATC'21).

- **Down at once**: when the current rung no longer fits, the most accurate rung that fits runs
  the very next batch (the cheapest when none fits).
- **Up with hysteresis**: a more accurate rung is taken back only after it has fitted with room to
  spare (``up_room`` of the budget) for ``up_after`` decisions in a row, one rung at a time, so a
  burst does not make the ladder flap.
- **Admission**: a new request is refused (503 + Retry-After) only when even the cheapest rung
  could not answer it within half the target (``admit_margin``): under overload every admitted
  request waits at that edge, and the other half is room for what the plan cannot see.
- **Learning**: every batch's measured time updates that rung's latency at that batch size (at once
  when slower than expected, else an exponential average), so a profile measured on a quieter
  machine corrects itself; the rungs not running drift back toward their measured profile, so one
  burst does not bar a rung for good.

Everything is in milliseconds and nothing here reads a clock: the caller passes ages and
durations, so tests drive it with a fake clock.

Example:
    >>> rungs = [RungProfile("r0", {1: 10.0, 8: 40.0}), RungProfile("r1", {1: 2.0, 8: 8.0})]
    >>> control = RungController(rungs, ControlConfig(target_ms=50), max_batch=8)
    >>> control.choose(Backlog(oldest_age_ms=1, rows=1))
    0
    >>> control.choose(Backlog(oldest_age_ms=5, rows=16))   # 2 batches of 8 at r0: 85 ms > 40 ms budget
    1
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from edgeopt.core.errors import ConfigError
from edgeopt.core.exits import StagedExits
from edgeopt.core.ladder import Ladder


@dataclass(frozen=True)
class ControlConfig:
    target_ms: float  # answers should complete within this, from arrival
    margin: float = 0.2  # plan to complete within target x (1 - margin): room for the variance of latency
    # admit a request only if the cheapest rung would answer it within target x (1 - admit_margin). Under
    # overload the queue sits exactly where admission lets it, so every answer is planned at that edge: the rest
    # of the target is the room for what the plan does not see (batch times swinging with the HTTP work on the
    # same cores, reading and answering around the queue). Measured at 3x load on 2 CPUs: admitting up to the
    # rung budget (0.2) gave 82% of answers within the target
    admit_margin: float = 0.5
    up_after: int = 8  # decisions in a row a more accurate rung must fit with room before it is taken back
    up_room: float = 0.6  # ... fitting within this share of the planned budget
    learn_rate: float = 0.2  # weight of one observed batch time in a rung's latency estimate
    relax_rate: float = 0.05  # per decision, how far an idle rung's estimates move back toward their measured values

    def __post_init__(self) -> None:
        if not (self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise ConfigError(f"the latency target must be a positive number of ms, got {self.target_ms}")
        if (not 0 <= self.margin < 1 or not 0 <= self.admit_margin < 1 or not 0 < self.up_room <= 1
                or not 0 < self.learn_rate <= 1 or not 0 <= self.relax_rate <= 1 or self.up_after < 1):
            raise ConfigError("margin and admit_margin must be in [0, 1), up_room and learn_rate in (0, 1], "
                              "relax_rate in [0, 1], up_after >= 1")

    @property
    def budget_ms(self) -> float:
        return self.target_ms * (1 - self.margin)

    @property
    def admit_budget_ms(self) -> float:
        return self.target_ms * (1 - self.admit_margin)


@dataclass(frozen=True)
class Backlog:
    """What waits before the next batch: the oldest request's age, the rows queued (the next batch's included)
    and the time left on the batch that is still running (0 when none runs)."""

    oldest_age_ms: float
    rows: int
    running_left_ms: float = 0.0


@dataclass
class RungProfile:
    """A rung's name and its measured latency per batch size (ms per batch), scaled by what is observed."""

    name: str
    batch_ms: dict[int, float]
    quality: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0  # observed / measured, an exponential average: 1.3 = running 30% slower than measured

    def __post_init__(self) -> None:
        if not self.batch_ms or any(b < 1 or not (ms > 0 and math.isfinite(ms)) for b, ms in self.batch_ms.items()):
            raise ConfigError(f"rung {self.name}: latency needs positive ms for batch sizes >= 1, got {self.batch_ms}")
        self.batch_ms = dict(sorted(self.batch_ms.items()))

    def predict(self, rows: int) -> float:
        """ms to run one batch of ``rows``, at the observed scale."""
        return self.scale * self.measured(rows)

    def measured(self, rows: int) -> float:
        """ms for ``rows`` as measured: the measured point, else a straight line between the two measured around
        it, else (past the largest) that batch's time per row, times ``rows``."""
        sizes = list(self.batch_ms)
        if rows in self.batch_ms:
            return self.batch_ms[rows]
        index = bisect.bisect_left(sizes, rows)
        if index == 0:
            return self.batch_ms[sizes[0]]  # fewer rows than the smallest measured batch: no cheaper
        if index == len(sizes):
            return self.batch_ms[sizes[-1]] * rows / sizes[-1]
        low, high = sizes[index - 1], sizes[index]
        share = (rows - low) / (high - low)
        return self.batch_ms[low] + share * (self.batch_ms[high] - self.batch_ms[low])

    def observe(self, rows: int, ms: float, learn_rate: float) -> None:
        """Move the scale toward an observed batch time's ratio to the measured one: all the way when the batch
        ran slower than expected (every request planned on the old estimate would be late: believe it at once),
        though at most doubling per batch (one stalled batch, a GC pause, must not make the rung look 100x
        slower and refuse everything while it learns back); ``learn_rate`` of the way when it ran faster."""
        if ms > 0 and math.isfinite(ms):
            ratio = ms / self.measured(rows)
            if ratio > self.scale:
                self.scale = min(ratio, 2 * self.scale)
            else:
                self.scale += learn_rate * (ratio - self.scale)

    def relax(self, rate: float) -> None:
        """Move the scale a step back toward 1 (as measured). A rung that is not running learns nothing new, and
        times inflated by one burst (the CPU shared with the HTTP work) would otherwise keep it out for good;
        if it really got slower, the batch it runs when taken back teaches that at once."""
        self.scale += rate * (1.0 - self.scale)


class RungController:
    """Chooses a rung per batch (index 0 = most accurate) and admits or refuses new requests."""

    def __init__(self, rungs: list[RungProfile], config: ControlConfig, max_batch: int) -> None:
        if not rungs:
            raise ConfigError("a controller needs at least one rung")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        self.rungs = rungs
        self.config = config
        self.max_batch = max_batch
        self.current = 0
        self._fits_above = 0  # decisions in a row the rung above has fitted with room

    @classmethod
    def for_ladder(cls, ladder: Ladder, config: ControlConfig, max_batch: int) -> "RungController":
        """A controller for ``ladder``'s rungs, seeded with their measured p50 per batch size."""
        profiles = [RungProfile(rung.name, {b: v["p50"] for b, v in rung.latency_ms.items()}, rung.quality)
                    for rung in ladder.rungs]
        return cls(profiles, config, max_batch)

    @classmethod
    def for_exits(cls, staged: StagedExits, config: ControlConfig, max_batch: int) -> "RungController":
        """A controller whose rungs are ``staged``'s threshold settings (accuracy first to fastest), seeded with the
        p50 per batch size each was timed at on validation images."""
        if not staged.timed:
            raise ConfigError(f"{staged.path}: its settings carry no latency per batch size (built by an older "
                              "edgeopt); build it again with `edgeopt exits` to serve it under a latency target")
        # A later setting leaves at least as early on every image, so it costs no more: timing noise between two
        # settings that leave alike (as the thresholds of two budgets often do) must not make a faster one look
        # slower. Each p50 is capped by the settings before it.
        profiles, cap = [], {}
        for setting in staged.settings:
            cap = {b: min(v["p50"], cap.get(b, math.inf)) for b, v in setting.latency_ms.items()}
            profiles.append(RungProfile(setting.name, dict(cap), setting.validation))
        return cls(profiles, config, max_batch)

    def completion_ms(self, rung: int, backlog: Backlog) -> float:
        """When the last queued row would complete at ``rung``: the oldest's age, the running batch's rest, and
        every queued row in batches of ``max_batch``."""
        profile = self.rungs[rung]
        full, rest = divmod(max(backlog.rows, 0), self.max_batch)
        work = full * profile.predict(self.max_batch) + (profile.predict(rest) if rest else 0.0)
        return backlog.oldest_age_ms + backlog.running_left_ms + work

    def choose(self, backlog: Backlog) -> int:
        """The rung for the next batch; steps down at once, up one rung after ``up_after`` roomy fits."""
        budget = self.config.budget_ms
        for index, rung in enumerate(self.rungs):
            if index != self.current:
                rung.relax(self.config.relax_rate)
        if self.completion_ms(self.current, backlog) > budget:
            # down only (a more accurate rung comes back through the hysteresis below); none fits: the cheapest
            lower = range(self.current, len(self.rungs))
            fitting = [i for i in lower if self.completion_ms(i, backlog) <= budget]
            self.current = fitting[0] if fitting else min(lower, key=lambda i: (self.completion_ms(i, backlog), -i))
            self._fits_above = 0
            return self.current
        above = self.current - 1
        if above >= 0 and self.completion_ms(above, backlog) <= budget * self.config.up_room:
            self._fits_above += 1
            if self._fits_above >= self.config.up_after:
                self.current, self._fits_above = above, 0
        else:
            self._fits_above = 0
        return self.current

    def admits(self, backlog: Backlog, rows: int = 1) -> bool:
        """Whether one more request of ``rows`` can complete within the budget (counted from its own arrival) at
        the cheapest rung, behind the running batch and every row queued before it; when not, it is better
        refused now than answered late. ``backlog``: the request's own age so far (time spent reading and
        parsing it), the rows queued before it, the running batch's rest. Planned against the admission
        budget (``admit_margin``), tighter than the rungs': under overload every admitted request sits at
        that edge."""
        if backlog.rows == 0 and backlog.running_left_ms <= 0:
            return True  # idle: always try, whatever the size (a refusal teaches the estimates nothing: no recovery)
        newest = Backlog(backlog.oldest_age_ms, backlog.rows + rows, backlog.running_left_ms)
        return self.completion_ms(self.cheapest(newest), newest) <= self.config.admit_budget_ms

    def cheapest(self, backlog: Backlog) -> int:
        """The rung predicted to finish ``backlog`` soonest (the last, unless profiles say otherwise)."""
        return min(range(len(self.rungs)), key=lambda i: (self.completion_ms(i, backlog), -i))

    def observe(self, rung: int, rows: int, ms: float) -> None:
        """A batch of ``rows`` ran on ``rung`` in ``ms``."""
        self.rungs[rung].observe(rows, ms, self.config.learn_rate)
