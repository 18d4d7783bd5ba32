"""The search's pure parts: device profiles, goals, the Pareto choice, the journal, the space."""

from __future__ import annotations

import dataclasses
import json

import pytest

from edgeopt.devices import all_devices, estimate_ms, get_device, host_profile, roofline_s
from edgeopt.core.errors import ConfigError
from edgeopt.measure.measurement import Measurement
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.core.quantization import QuantizationConfig
from edgeopt.search import Candidate, Goals, Violation, parse_duration
from edgeopt.search.journal import Journal
from edgeopt.search.pareto import choose, closest, pareto_front
from edgeopt.search.candidate import ModelScore, Probe
from edgeopt.tasks import Metric, get_task


# -- devices ---------------------------------------------------------------------------
def test_the_guides_hardware_matrix_is_there_with_sources():
    ids = {d.id for d in all_devices()}
    assert {"host", "rpi4b", "rpi5", "jetson-nano", "jetson-agx-xavier", "jetson-orin-nano", "jetson-agx-orin",
            "x86-edge", "stm32h7", "esp32-s3", "nrf5340", "rp2040", "nano33-ble"} <= ids
    for device in all_devices():
        assert device.cpu.fp32_gflops > 0 and device.cpu.cores >= 1 and device.sources
        if device.mcu is None:
            assert device.memory_cap_mb < device.memory_mb
        else:  # a microcontroller runs no process: its arena and flash are the bounds, and only TFLM runs there
            assert device.memory_cap_mb is None and device.backends == ("tflm",)
            assert device.mcu.sram_kb <= device.memory_mb * 1024 and device.mcu.flash_kb > 0
    assert get_device("jetson-nano").gpu.fp16_gflops == 472.0
    assert "tensorrt" in get_device("jetson-agx-orin").backends and "tensorrt" not in get_device("rpi4b").backends


def test_host_is_detected_and_unknown_devices_are_one_clear_error():
    host = host_profile()
    assert host.is_host and host.cpu.cores >= 1 and host.cpu.memory_gbps > 0
    with pytest.raises(ConfigError, match="unknown device 'pi9'.*rpi4b"):
        get_device("pi9")


def test_roofline_estimate_scales_with_peak_and_is_compute_or_memory_bound():
    host, rpi = host_profile(), get_device("rpi4b")
    macs, weights = 100e6, 4e6
    estimate = estimate_ms(2.0, rpi, host, "fp32", macs, weights, threads_here=1)
    assert estimate == pytest.approx(2.0 * roofline_s(rpi.cpu, "fp32", macs, weights)
                                     / roofline_s(host.cpu, "fp32", macs, weights, 1))
    # a weight-heavy, compute-light model is bound by memory bandwidth
    assert roofline_s(rpi.cpu, "fp32", 1e3, 1e9) == pytest.approx(1e9 / (rpi.cpu.memory_gbps * 1e9))
    # INT8 peaks are higher, so the same work is estimated faster
    assert roofline_s(rpi.cpu, "int8", macs, weights) < roofline_s(rpi.cpu, "fp32", macs, weights)


# -- goals -----------------------------------------------------------------------------
def measured(ms=1.0, size=1.0, rss=80.0, **metrics) -> Measurement:
    return Measurement(latency_ms=ms, peak_rss_mb=rss, size_mb=size, threads=2, metrics=metrics or {"top1": 0.9})


def test_goals_name_each_violated_bound_in_words():
    goals = Goals(max_latency_ms=1.0, max_size_mb=2.0, max_drop=0.5)
    missed = goals.violations(measured(ms=1.5), drop_points=0.8, metric_title="top-1")
    assert [v.goal for v in missed] == ["max_drop", "max_latency_ms"]
    assert missed[0].text == "loses 0.80 points of top-1 (at most 0.5)" and missed[1].text == "p50 1.5 ms (at most 1)"
    assert not any("--" in v.text for v in missed)  # no command-line flag in library text
    slower = goals.violations(measured(ms=2.0), drop_points=0.8)
    assert goals.shortfall(slower) > goals.shortfall(missed) > 0
    assert Goals().violations(measured(ms=9.0), drop_points=0.2) == []
    capped = Goals().violations(measured(rss=900.0), 0.0, memory_cap_mb=512.0, device="rpi4b")
    assert capped[0].goal == "memory_cap" and "rpi4b" in capped[0].text
    assert Goals().describe("top-1") == "priority latency; at most 1 point of top-1 lost"


def test_a_sustained_p99_goal_judges_the_last_window_and_nothing_when_unmeasured():
    import dataclasses

    goals = Goals(max_sustained_p99_ms=3.0)
    hot = dataclasses.replace(measured(ms=1.0), sustained={"p99_first_ms": 2.0, "p99_last_ms": 3.5, "drift": 1.75})
    (missed,) = goals.violations(hot, drop_points=0.0)
    assert missed.goal == "max_sustained_p99_ms" and missed.text == "sustained p99 3.5 ms (at most 3)"
    assert goals.violations(measured(ms=1.0), drop_points=0.0) == []  # no sustained run: nothing to judge
    assert "sustained p99 at most 3 ms" in goals.describe()


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("90s", 90), ("2h", 7200), ("45", 45), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "-3m", "0s"])
def test_bad_durations_and_goals_are_config_errors(bad):
    with pytest.raises(ConfigError):
        parse_duration(bad)
    with pytest.raises(ConfigError, match="priority"):
        Goals(priority="speed")
    with pytest.raises(ConfigError, match="max_latency_ms"):
        Goals(max_latency_ms=0)


# -- choice ----------------------------------------------------------------------------
TOP1 = get_task("classification").main


def rec(key, ms, top1, size=1.0, rss=100.0, violations=(), status="ok"):
    missed = [Violation("max_drop", 1.0, 2.0, "points", "top-1") for _ in violations]
    return Candidate(key=key, label=key, stage=1, status=status, recipe={}, metric="top1", metric_title="top-1",
                     measurement=measured(ms, size, rss, top1=top1) if status == "ok" else None,
                     violations=missed, shortfall=0.5 * len(missed))


def test_front_and_choice_by_priority():
    records = [rec("fast", 1.0, 0.95), rec("accurate", 3.0, 0.99, size=4.0), rec("dominated", 3.5, 0.95),
               rec("fastest-but-bad", 0.5, 0.80, violations=["drop"]),
               rec("small", 2.0, 0.96, size=0.5, rss=50.0), rec("broken", 0, 0, status="failed")]
    assert [r.key for r in pareto_front(records, TOP1)] == ["fastest-but-bad", "fast", "small", "accurate"]
    assert choose(records, "latency", TOP1).key == "fast"  # the fastest one that meets the goals
    assert choose(records, "accuracy", TOP1).key == "accurate"
    assert choose(records, "memory", TOP1).key == "small"


def test_a_metric_where_lower_is_better_turns_the_front_around():
    error = Metric("error", "error rate", higher_is_better=False)
    records = [rec("a", 1.0, 0.0), rec("b", 2.0, 0.0)]
    records[0].measurement = measured(1.0, error=0.10)
    records[1].measurement = measured(2.0, error=0.05)
    assert [r.key for r in pareto_front(records, error)] == ["a", "b"]
    assert choose(records, "accuracy", error).key == "b"
    assert error.drop_points(0.05, 0.10) == pytest.approx(5.0)


def test_no_passing_candidate_means_no_choice_and_the_closest_are_named():
    records = [rec("a", 2.0, 0.9, violations=["x", "y"]), rec("b", 1.0, 0.9, violations=["x"]),
               rec("c", 3.0, 0.9, violations=["x"])]
    assert choose(records, "latency", TOP1) is None
    assert [r.key for r in closest(records, 2)] == ["b", "c"]


# -- journal ---------------------------------------------------------------------------
def test_journal_survives_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.add(rec("a", 1.0, 0.9))
    journal.add(Probe("probe:b", "ok", measured(), elapsed_s=1.0))
    journal.add(ModelScore("fp32:c", {"top1": 0.9}, 0.3, elapsed_s=0.5))
    with path.open("a") as handle:
        handle.write(json.dumps(rec("d", 1.0, 0.9).to_dict())[:40])  # killed mid-write
    reopened = Journal(path)
    assert "a" in reopened and "probe:b" in reopened and "fp32:c" in reopened and "d" not in reopened
    assert reopened.get("a") == journal.get("a") and isinstance(reopened.get("probe:b"), Probe)
    assert reopened.elapsed_s() == 1.5 and [r.key for r in reopened.candidates()] == ["a"]


# -- the space -------------------------------------------------------------------------
def test_stage_two_order_follows_the_priority():
    from edgeopt.search.space import SearchSpace, fine_tune_candidates

    space = SearchSpace(prune_ratios=(0.5, 0.75), resolutions=(0.75,), students=("torchvision:mobilenet_v2",), epochs=2)
    base = Recipe(model="m.safetensors", data="d")
    export = ExportConfig("onnxruntime", "int8", QuantizationConfig(mode="aware", max_drop=1.0))
    labels = {p: [r.label for r in fine_tune_candidates(space, base, p, [export], 64, ["openvino"])]
              for p in ("latency", "accuracy", "memory")}
    assert labels["latency"][0].startswith("prune 0.5") and labels["latency"][-1] == "openvino int8 QAT (3 ep)"
    assert labels["accuracy"][0] == "openvino int8 QAT (3 ep)" and labels["accuracy"][1].startswith("prune 0.5")
    assert labels["memory"][0].startswith("prune 0.75") and not any("QAT" in label for label in labels["memory"])
    assert "distil→same arch @48px (2 ep) → onnxruntime int8 aware" in labels["latency"]
    # torchvision students downsample 32x: not offered for 8x8 inputs
    small = [r.label for r in fine_tune_candidates(space, base, "latency", [export], 8, [])]
    assert not any("mobilenet" in label for label in small) and len(small) == 3


def test_stage_two_exports_the_fastest_int8_runtime_that_fits_the_memory_goal():
    from edgeopt.search.space import stage2_exports

    def done(backend, precision, mode, ms, rss):
        quantization = QuantizationConfig(mode=mode, max_drop=1.0 if mode == "aware" else None) if mode else None
        recipe = Recipe("m", "d", export=ExportConfig(backend, precision, quantization))
        record = rec(recipe.hash, ms, 0.9, rss=rss)
        record.violations = Goals(max_memory_mb=300).violations(record.measurement, 0.0)
        return recipe, record

    stage1 = [done("executorch", "int8", "static", 0.26, 750.0), done("openvino", "int8", "static", 0.29, 126.0),
              done("openvino", "int8", "aware", 0.30, 126.0), done("onnxruntime", "int8", "static", 0.38, 96.0),
              done("onnxruntime", "fp32", None, 1.2, 190.0)]
    exports = stage2_exports(stage1, "latency", TOP1)  # ExecuTorch is fastest, but its runtime needs 750 MB
    assert [(e.backend, e.quantization.mode) for e in exports] == [("openvino", "static"), ("openvino", "aware")]
    assert stage2_exports(stage1, "accuracy", TOP1)[-1] == ExportConfig("onnxruntime")
    fits = [(recipe, rec(recipe.hash, record.latency_ms, 0.9)) for recipe, record in stage1]  # no memory goal
    assert stage2_exports(fits, "latency", TOP1)[0].backend == "executorch"
    # openvino's accuracy-aware INT8 skipped for the baseline (plain INT8 met the goals): a pruned model may need it
    stage1[2] = (stage1[2][0], rec(stage1[2][0].hash, 0, 0, status="skipped"))
    assert [(e.backend, e.quantization.mode) for e in stage2_exports(stage1, "latency", TOP1)] == [
        ("openvino", "static"), ("openvino", "aware")]


def test_runtimes_within_timing_noise_go_by_quality_then_size_both_for_stage_two_and_the_choice():
    from edgeopt.search.space import stage2_exports

    def done(backend, ms, top1, size):
        recipe = Recipe("m", "d", export=ExportConfig(backend, "int8", QuantizationConfig()))
        return recipe, rec(recipe.hash, ms, top1, size=size)

    # 0.30 / 0.31 / 0.315 ms cannot be told apart run to run: the equally accurate, smallest one is taken
    stage1 = [done("onnxruntime", 0.30, 0.99, 10.81), done("executorch", 0.31, 0.99, 10.73),
              done("openvino", 0.315, 0.99, 10.84), done("tflite", 0.40, 1.0, 1.0)]
    for ordering in (stage1, stage1[::-1]):
        assert stage2_exports(ordering, "latency", TOP1)[0].backend == "executorch"
        chosen = choose([r for _, r in ordering], "latency", TOP1)
        assert chosen.key == next(recipe.hash for recipe, _ in ordering if recipe.export.backend == "executorch")
    stage1[1] = done("executorch", 0.31, 0.985, 10.73)  # a little less accurate: the next smallest
    assert stage2_exports(stage1, "latency", TOP1)[0].backend == "onnxruntime"
    stage1[1] = done("executorch", 0.33, 0.99, 10.73)  # 10% slower is slower
    assert stage2_exports(stage1, "latency", TOP1)[0].backend == "onnxruntime"


def test_the_runoff_takes_the_near_fastest_of_what_the_decision_ranks():
    from edgeopt.search.pareto import RUNOFF_MAX, runoff_contenders

    records = [rec("a", 0.30, 0.99), rec("b", 0.44, 0.99), rec("c", 0.46, 0.99), rec("x", 0.1, 0, status="failed")]
    assert [r.key for r in runoff_contenders(records, TOP1)] == ["a", "b"]  # within 1.5x of the fastest measured
    # stage 2's runtime: a runtime whose plain INT8 loses too much still ranks (its aware INT8 may hold)
    lossy = rec("d", 0.25, 0.5, violations=["drop"])
    assert [r.key for r in runoff_contenders([*records, lossy], TOP1)] == ["d", "a"]
    many = [rec(str(i), 1.0 + i / 100, 0.9) for i in range(10)]
    assert len(runoff_contenders(many, TOP1)) == RUNOFF_MAX


def test_a_re_timed_record_replaces_its_first_line_without_counting_its_time_twice(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    first = dataclasses.replace(rec("a", 1.0, 0.9), elapsed_s=10.0)
    journal.add(first)
    retimed = dataclasses.replace(first, elapsed_s=12.0,
                                  measurement=dataclasses.replace(first.measurement, latency_ms=0.8, p50_runs=[1.0, 0.8, 0.7]))
    journal.add(retimed)
    reopened = Journal(tmp_path / "journal.jsonl")
    assert reopened.elapsed_s() == 12.0 and reopened.get("a").measurement.p50_runs == [1.0, 0.8, 0.7]
    journal.add(dataclasses.replace(rec("b", 0, 0, status="stopped"), elapsed_s=5.0))
    journal.add(dataclasses.replace(rec("b", 1.0, 0.9), elapsed_s=7.0))  # a stopped attempt's time was spent too
    assert Journal(tmp_path / "journal.jsonl").elapsed_s() == 24.0


def test_extra_steps_join_stage_two():
    from edgeopt.search.space import SearchSpace, fine_tune_candidates

    space = SearchSpace(prune_ratios=(), resolutions=(), students=(), qat=False,
                        steps=(Step.of("sparsify", amount=0.5, fine_tune={"epochs": 1}),))
    recipes = fine_tune_candidates(space, Recipe("m", "d"), "latency", [ExportConfig("onnxruntime")], 32, [])
    assert [r.label for r in recipes] == ["sparsify 0.5 (1 ep) → onnxruntime fp32"]


def test_choice_is_a_function_of_the_records_not_their_order():
    records = [rec("a", 1.0, 0.95), rec("b", 1.0, 0.96), rec("c", 2.0, 0.99)]
    for ordering in (records, records[::-1], records[1:] + records[:1]):
        assert choose(ordering, "latency", TOP1).key == "b"  # equal latency: the more accurate
        assert [r.key for r in pareto_front(ordering, TOP1)] == ["b", "c"]


def test_accuracy_aware_int8_is_skipped_in_either_stage_where_plain_int8_already_meets_the_goals():
    from edgeopt.search.space import aware_not_needed, plain_ptq

    base = Recipe("m", "d", steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 1}),))
    for recipe in (Recipe("m", "d"), base):  # stage 1 (the baseline) and stage 2 (a fine-tuned model)
        aware = dataclasses.replace(recipe, export=ExportConfig("openvino", "int8", QuantizationConfig(
            mode="aware", max_drop=1.0, calibration_samples=100, preset="mixed")))
        plain = plain_ptq(aware)
        assert plain.export.quantization == QuantizationConfig(calibration_samples=100, preset="mixed")
        assert plain.steps == recipe.steps and plain_ptq(plain) is None
        meets, misses = rec(plain.hash, 1.0, 0.9), rec(plain.hash, 1.0, 0.8, violations=["drop"])
        assert "already meets the goals" in aware_not_needed(aware, {plain.hash: meets}.get, "latency")
        assert aware_not_needed(aware, {plain.hash: misses}.get, "latency") is None
        assert aware_not_needed(aware, {}.get, "memory") is None  # plain INT8 not measured (yet)
        assert aware_not_needed(aware, {plain.hash: meets}.get, "accuracy") is None  # more FP32 may win there
        assert aware_not_needed(plain, {plain.hash: meets}.get, "latency") is None


def test_the_budget_carried_across_resumes_is_the_search_clock_at_the_last_record(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.add(Probe("probe:a", "ok", measured(), elapsed_s=2.0))
    first = rec("a", 1.0, 0.9)
    first.elapsed_s, first.status, first.finished_at_s = 30.0, "stopped", 50.0  # set-up and the probe before it
    journal.add(first)
    assert Journal(tmp_path / "journal.jsonl").elapsed_s() == 50.0
    again = rec("a", 1.0, 0.9)
    again.elapsed_s, again.finished_at_s = 40.0, 100.0  # built again on resume: the stopped attempt still counts
    journal.add(again)
    reopened = Journal(tmp_path / "journal.jsonl")
    assert reopened.elapsed_s() == 100.0 and reopened.get("a").status == "ok"
    assert "stopped" in Candidate.RETRIED and "unmeasured" in Candidate.RETRIED


def test_a_latency_probe_calibrates_its_int8_on_a_few_samples_only():
    from edgeopt.search.meter import PROBE_CALIBRATION, _lightly_calibrated

    recipe = Recipe("m", "d", export=ExportConfig("executorch", "int8", QuantizationConfig(calibration_samples=300)))
    light = _lightly_calibrated(recipe)
    assert light.export.quantization.calibration_samples == PROBE_CALIBRATION < 300
    assert dataclasses.replace(light.export.quantization, calibration_samples=300) == recipe.export.quantization
    assert light.steps == recipe.steps and light.export.backend == "executorch"  # the same graph, so the same latency
    fp32 = Recipe("m", "d", export=ExportConfig("onnxruntime"))
    assert _lightly_calibrated(fp32) is fp32


def test_a_microcontroller_bound_must_be_a_positive_number_and_the_part_bounds_the_goals():
    from edgeopt.search.goals import Goals
    from edgeopt.search.loop import within_part

    for bad in (float("nan"), float("inf"), 0.0, -5.0):
        with pytest.raises(ConfigError, match="max_sram_kb must be a positive number"):
            Goals(max_sram_kb=bad)
    part = get_device("nano33-ble").mcu
    assert (within_part(Goals(), part).max_sram_kb, within_part(Goals(), part).max_flash_kb) == (256, 1024)
    assert within_part(Goals(max_sram_kb=100, max_flash_kb=5000), part).max_sram_kb == 100  # the tighter one holds
    assert within_part(Goals(max_sram_kb=100, max_flash_kb=5000), part).max_flash_kb == 1024
    assert "max_sram_kb" not in Goals().to_dict()  # a search started before these bounds existed still resumes


def test_memory_first_ranks_microcontroller_candidates_by_arena_then_flash_not_the_host_process():
    from edgeopt.measure.measurement import Measurement
    from edgeopt.search.candidate import Candidate
    from edgeopt.search.pareto import choose
    from edgeopt.tasks import get_task

    def candidate(key, arena_kb, flash_kb, peak_rss_mb):
        record = Candidate(key, key, 2, "ok", {}, metric="top1", drop_points=0.0)
        record.measurement = Measurement(latency_ms=1.0, peak_rss_mb=peak_rss_mb, size_mb=flash_kb / 1024, threads=1,
                                         metrics={"top1": 0.9}, arena_kb=arena_kb, flash_kb=flash_kb)
        return record

    metric = get_task("classification").metric(None)
    small_arena = candidate("a", 40.0, 800.0, peak_rss_mb=300.0)  # the host process's memory says nothing here
    large_arena = candidate("b", 90.0, 100.0, peak_rss_mb=100.0)
    assert choose([large_arena, small_arena], "memory", metric).key == "a"
