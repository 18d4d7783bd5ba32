"""The rung controller against a fake clock: rungs that 'sleep' a known time per batch, requests arriving on
a schedule, one worker running batches one after another (as the server's batcher does)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.runtime.controller import Backlog, ControlConfig, RungController, RungProfile

# true cost of a batch of n rows, ms: a fixed part and a part per row (as a CPU model has)
FULL = (4.0, 2.0)    # batch 8: 20 ms -> 400 rows/s
FAST = (1.0, 0.5)    # batch 8: 5 ms -> 1600 rows/s
FASTEST = (0.5, 0.25)


def cost(rung: tuple[float, float], rows: int) -> float:
    return rung[0] + rung[1] * rows


def profile(name: str, rung: tuple[float, float]) -> RungProfile:
    return RungProfile(name, {b: cost(rung, b) for b in (1, 2, 4, 8)})


@dataclass
class Simulation:
    """Requests arrive every ``gap_ms`` of fake time; the worker takes up to ``max_batch`` of the oldest,
    asks the controller for a rung, and the clock moves on by that rung's true cost."""

    controller: RungController
    truth: list[tuple[float, float]]
    admission: bool = True
    answered: list[tuple[float, int]] = field(default_factory=list)  # (latency ms, rung)
    refused: int = 0
    decisions: list[int] = field(default_factory=list)

    def run(self, arrivals: list[float]) -> None:
        queue: list[float] = []
        now, free_at, index = 0.0, 0.0, 0
        running_end = 0.0
        while index < len(arrivals) or queue:
            next_arrival = arrivals[index] if index < len(arrivals) else float("inf")
            if queue and free_at <= next_arrival:
                now = max(now, free_at)
                batch, queue = queue[:self.controller.max_batch], queue[self.controller.max_batch:]
                rung = self.controller.choose(Backlog(now - batch[0], len(batch) + len(queue)))
                self.decisions.append(rung)
                took = cost(self.truth[rung], len(batch))
                self.controller.observe(rung, len(batch), took)
                free_at = running_end = now + took
                self.answered += [(free_at - arrived, rung) for arrived in batch]
                continue
            now = next_arrival
            index += 1
            backlog = Backlog(now - queue[0] if queue else 0.0, len(queue), max(0.0, running_end - now))
            if self.admission and not self.controller.admits(backlog):
                self.refused += 1
            else:
                queue.append(now)

    def within(self, target_ms: float) -> int:
        return sum(latency <= target_ms for latency, _ in self.answered)


def steady(rate_per_s: float, seconds: float, start_ms: float = 0.0) -> list[float]:
    gap = 1000.0 / rate_per_s
    return [start_ms + i * gap for i in range(int(seconds * rate_per_s))]


def controller(target_ms: float = 50.0, **config) -> RungController:
    return RungController([profile("full", FULL), profile("fast", FAST), profile("fastest", FASTEST)],
                          ControlConfig(target_ms=target_ms, **config), max_batch=8)


def test_low_load_stays_on_the_most_accurate_rung():
    sim = Simulation(controller(), [FULL, FAST, FASTEST])
    sim.run(steady(100, 2.0))  # a quarter of the full rung's capacity
    assert sim.refused == 0 and set(sim.decisions) == {0}
    assert sim.within(50.0) == len(sim.answered) == 200


def test_steps_down_at_once_when_the_backlog_would_miss_the_budget():
    control = controller()
    assert control.choose(Backlog(oldest_age_ms=1.0, rows=8)) == 0  # 1 + 20 ms fits 40
    # 24 rows on full: 3 batches of 20 ms = 60 ms > 40: the very next batch runs on the fastest rung that fits
    assert control.choose(Backlog(oldest_age_ms=1.0, rows=24)) == 1
    assert control.choose(Backlog(oldest_age_ms=30.0, rows=24)) == 2  # fast: 30 + 15 = 45 > 40; fastest: 37.5
    assert control.choose(Backlog(oldest_age_ms=100.0, rows=24)) == 2  # nothing fits: the cheapest


def test_steps_up_one_rung_after_up_after_roomy_fits_in_a_row():
    control = controller(up_after=3)
    control.choose(Backlog(30.0, 24))
    assert control.current == 2
    quiet = Backlog(0.0, 1)
    assert [control.choose(quiet) for _ in range(6)] == [2, 2, 1, 1, 1, 0]
    # a fit that is not roomy (within the budget but above up_room of it) resets the count
    control = controller(up_after=2)
    control.choose(Backlog(30.0, 24))
    almost = Backlog(10.0, 8)  # fast: 10 + 5 = 15 <= 0.6 x 40 = 24: roomy for rung 1
    tight = Backlog(18.0, 8)  # fast: 23 <= 24 roomy; full would be 38: fits, not roomy
    assert [control.choose(almost), control.choose(tight), control.choose(tight), control.choose(tight)] == [2, 1, 1, 1]


def test_admission_refuses_only_what_the_cheapest_rung_cannot_answer_in_time():
    control = controller(admit_margin=0.2)  # admits within the rungs' own budget: 40 ms
    assert control.admits(Backlog(0.0, 0))
    # budget 40 ms; fastest: a batch of 8 = 2.5 ms, a batch of 1 = 0.75 ms
    assert control.admits(Backlog(0.0, 96, running_left_ms=9.0))  # 9 + 12 x 2.5 + 0.75 = 39.75
    assert not control.admits(Backlog(0.0, 96, running_left_ms=9.5))
    assert not control.admits(Backlog(0.0, 160))
    assert not control.admits(Backlog(0.0, 0, running_left_ms=45.0))
    # by default admission plans within half the target (25 ms): the rest is room for what the plan cannot see
    assert controller().admits(Backlog(0.0, 64, running_left_ms=4.0))  # 4 + 8 x 2.5 + 0.75 = 24.75
    assert not controller().admits(Backlog(0.0, 64, running_left_ms=5.0))


def test_an_idle_server_admits_even_when_its_estimates_say_no():
    # estimates inflated by a burst would otherwise refuse every request forever: refused requests teach nothing
    control = RungController([RungProfile("slow", {1: 500.0})], ControlConfig(target_ms=50.0), 8)
    assert control.admits(Backlog(0.0, 0)) and not control.admits(Backlog(0.0, 1))
    assert control.admits(Backlog(0.0, 0), rows=8)  # idle admits any request size


def test_three_times_the_full_capacity_keeps_answers_within_the_target():
    arrivals = steady(1200, 3.0)  # 3x the full rung's 400 rows/s, for 3 s of fake time
    static = Simulation(RungController([profile("full", FULL)], ControlConfig(target_ms=50.0), 8), [FULL],
                        admission=False)
    static.run(arrivals)
    ladder = Simulation(controller(), [FULL, FAST, FASTEST])
    ladder.run(arrivals)
    assert ladder.within(50.0) >= 0.99 * len(ladder.answered)
    assert ladder.within(50.0) >= 2.5 * static.within(50.0)
    assert ladder.refused == 0  # the fast rung's 1600 rows/s carries 1200
    assert set(ladder.decisions) >= {1}


def test_a_burst_is_absorbed_and_the_ladder_climbs_back():
    arrivals = steady(100, 1.0) + steady(1200, 0.5, start_ms=1000.0) + steady(100, 2.0, start_ms=1500.0)
    sim = Simulation(controller(), [FULL, FAST, FASTEST])
    sim.run(arrivals)
    assert max(sim.decisions) >= 1 and sim.decisions[-1] == 0
    assert sim.within(50.0) >= 0.99 * len(sim.answered) and sim.refused == 0


def test_more_than_the_cheapest_rung_can_carry_is_refused_not_answered_late():
    sim = Simulation(controller(), [FULL, FAST, FASTEST])
    sim.run(steady(6000, 1.0))  # the fastest rung carries 3200 rows/s
    assert sim.refused > 0
    assert sim.within(50.0) >= 0.99 * len(sim.answered)


def test_observed_batch_times_correct_a_profile_measured_too_optimistic():
    optimistic = [RungProfile("full", {b: cost(FULL, b) / 4 for b in (1, 8)}), profile("fast", FAST)]
    control = RungController(optimistic, ControlConfig(target_ms=50.0), 8)
    sim = Simulation(control, [FULL, FAST])
    sim.run(steady(600, 2.0))  # 1.5x the full rung's true capacity; its profile claims 6x
    late_at_start = sum(lat > 50.0 for lat, _ in sim.answered[:300])
    late_at_end = sum(lat > 50.0 for lat, _ in sim.answered[-300:])
    assert late_at_end == 0 and late_at_start <= 3
    assert control.rungs[0].scale > 1.5  # learned that it runs slower than measured (it ran last at the end)


def test_profile_interpolates_between_measured_batch_sizes_and_scales_by_what_it_observes():
    rung = RungProfile("r", {1: 2.0, 8: 9.0})
    assert rung.predict(1) == 2.0 and rung.predict(4) == pytest.approx(5.0)
    assert rung.predict(16) == pytest.approx(18.0)
    rung.observe(4, 10.0, learn_rate=0.5)  # twice as slow as measured: believed at once
    assert rung.scale == pytest.approx(2.0) and rung.predict(8) == pytest.approx(18.0)
    rung.observe(4, 5.0, learn_rate=0.5)  # as measured again: learned half of the way
    assert rung.scale == pytest.approx(1.5) and rung.predict(8) == pytest.approx(13.5)
    rung.relax(1.0)
    assert rung.predict(8) == pytest.approx(9.0)
    rung.observe(8, 900.0, learn_rate=0.5)  # one batch stalled 100x: at most a doubling is believed
    assert rung.scale == pytest.approx(2.0)


@pytest.mark.parametrize("bad", [{}, {1: 0.0}, {0: 1.0}, {1: float("nan")}])
def test_a_profile_without_positive_latencies_is_refused(bad):
    with pytest.raises(ConfigError, match="latency"):
        RungProfile("r", bad)


def test_config_is_checked():
    with pytest.raises(ConfigError, match="target"):
        ControlConfig(target_ms=0)
    with pytest.raises(ConfigError, match="margin"):
        ControlConfig(target_ms=10, margin=1.0)


def test_when_the_current_rung_misses_it_never_jumps_up_past_the_hysteresis():
    control = controller()
    control.choose(Backlog(30.0, 24))
    assert control.current == 2
    control.rungs[2].scale = 100.0  # the fastest rung ran slow (a noisy neighbour); the others look fine idle
    assert control.choose(Backlog(1.0, 1)) == 2  # nothing at or below it fits: the cheapest of those, not r0
    control.rungs[2].scale = 1.0


def test_the_cheapest_rung_is_the_one_predicted_fastest_not_the_last():
    rungs = [profile("full", FULL), RungProfile("odd", {1: 50.0, 8: 90.0}), profile("fast", FAST)]
    control = RungController([rungs[0], rungs[2], rungs[1]], ControlConfig(target_ms=50.0), 8)
    assert control.cheapest(Backlog(0.0, 8)) == 1
