import time

import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.measure.latency import TimingConfig, summarize, time_calls


def test_runs_until_both_iterations_and_seconds_are_reached():
    calls = []
    durations = time_calls(lambda: calls.append(1), TimingConfig(warmup=3, min_iters=20, min_seconds=0.0))
    assert len(durations) == 20 and len(calls) == 23
    started = time.perf_counter()
    durations = time_calls(lambda: None, TimingConfig(warmup=0, min_iters=1, min_seconds=0.2))
    assert time.perf_counter() - started >= 0.2 and len(durations) > 1


def test_slow_calls_stop_at_max_seconds_after_five_runs():
    durations = time_calls(lambda: time.sleep(0.02), TimingConfig(warmup=0, min_iters=1000, min_seconds=0, max_seconds=0.05))
    assert 5 <= len(durations) < 1000


def test_summary_percentiles_and_throughput():
    summary = summarize([1.0] * 98 + [10.0, 20.0], batch=8)
    assert summary["p50"] == 1.0 and summary["p99"] > 9.0
    assert summary["throughput"] == pytest.approx(8 * 1000 / summary["mean"])
    assert summary["iterations"] == 100


def test_bad_timing_config():
    with pytest.raises(ConfigError):
        TimingConfig(min_iters=0)
