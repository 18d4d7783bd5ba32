"""The search's pure parts: device profiles, goals, recipes, the Pareto choice, the journal."""

from __future__ import annotations

import json

import pytest

from edgeopt.devices import all_devices, estimate_ms, get_device, host_profile, roofline_s
from edgeopt.errors import ConfigError
from edgeopt.search import Goals, Recipe, Step, parse_duration
from edgeopt.search.journal import Journal
from edgeopt.search.pareto import choose, closest, pareto_front


# -- devices ---------------------------------------------------------------------------
def test_the_guides_hardware_matrix_is_there_with_sources():
    ids = {d.id for d in all_devices()}
    assert {"host", "rpi4b", "rpi5", "jetson-nano", "jetson-agx-xavier", "jetson-orin-nano", "jetson-agx-orin",
            "x86-edge"} <= ids
    for device in all_devices():
        assert device.cpu.fp32_gflops > 0 and device.cpu.cores >= 1 and device.sources
        assert device.memory_cap_mb < device.memory_mb
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
def test_goals_name_each_violated_bound():
    goals = Goals(max_latency_ms=1.0, max_size_mb=2.0, max_accuracy_drop=0.5)
    record = {"drop_points": 0.8, "latency_ms": 1.5, "size_mb": 1.0, "peak_rss_mb": 80.0}
    missed = goals.violations(record)
    assert len(missed) == 2 and missed[0].startswith("--max-accuracy-drop 0.5") and missed[1].startswith("--max-latency-ms 1")
    assert goals.shortfall(record) > goals.shortfall({**record, "latency_ms": 1.1}) > 0
    assert Goals().violations({"drop_points": 0.2, "latency_ms": 9.0}) == []


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("90s", 90), ("2h", 7200), ("45", 45), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "-3m", "0s"])
def test_bad_durations_and_goals_are_config_errors(bad):
    with pytest.raises(ConfigError):
        parse_duration(bad)
    with pytest.raises(ConfigError, match="priority"):
        Goals(priority="speed")
    with pytest.raises(ConfigError, match="max-latency-ms"):
        Goals(max_latency_ms=0)


# -- recipes ---------------------------------------------------------------------------
def recipe(**changes) -> Recipe:
    base = dict(model="m.safetensors", data="digits", steps=(Step.of("prune", ratio=0.5, epochs=3),),
                backend="onnxruntime", precision="int8", quantization="aware", max_accuracy_drop=1.0)
    return Recipe(**{**base, **changes})


def test_recipe_hash_is_stable_and_sensitive(tmp_path):
    a = recipe()
    assert a.hash == recipe().hash and len(a.hash) == 12
    assert a.hash != recipe(steps=(Step.of("prune", ratio=0.75, epochs=3),)).hash
    assert a.hash != recipe(seed=1).hash
    path = a.write(tmp_path / "recipe.toml")
    assert path.read_text().startswith(f"# edgeopt recipe {a.hash}")
    assert Recipe.read(path) == a and Recipe.read(path).hash == a.hash


def test_recipe_untrained_keeps_the_architecture_drops_training_and_aware():
    qat = recipe(steps=(Step.of("prune", ratio=0.5, epochs=3), Step.of("qat", epochs=2)), quantization="qat",
                 max_accuracy_drop=None)
    probe = qat.untrained()
    assert [s.to_dict() for s in probe.steps] == [{"kind": "prune", "ratio": 0.5, "epochs": 0}]
    assert probe.quantization == "ptq" and not probe.trains and qat.trains
    assert qat.label == "prune 0.5 (3 ep) → onnxruntime int8 QAT (2 ep)"


def test_invalid_recipes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe step"):
        Step.of("shrink", ratio=0.5)
    with pytest.raises(ConfigError, match="has no parameter"):
        Step.of("prune", ratio=0.5, width=3)
    with pytest.raises(ConfigError, match="does not go with"):
        recipe(precision="fp32")
    with pytest.raises(ConfigError, match="needs max_accuracy_drop"):
        recipe(max_accuracy_drop=None)
    broken = tmp_path / "broken.toml"
    broken.write_text("model = 'x'\n[export\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Recipe.read(broken)
    broken.write_text("model = 'x'\n")
    with pytest.raises(ConfigError, match="not a valid recipe"):
        Recipe.read(broken)


# -- choice ----------------------------------------------------------------------------
def rec(key, ms, top1, size=1.0, rss=100.0, violations=(), status="ok"):
    return {"key": key, "status": status, "latency_ms": ms, "top1": top1, "size_mb": size, "peak_rss_mb": rss,
            "violations": list(violations), "shortfall": 0.5 * len(violations)}


def test_front_and_choice_by_priority():
    records = [rec("fast", 1.0, 0.95), rec("accurate", 3.0, 0.99, size=4.0), rec("dominated", 3.5, 0.95),
               rec("fastest-but-bad", 0.5, 0.80, violations=["--max-accuracy-drop 1: 19 points"]),
               rec("small", 2.0, 0.96, size=0.5, rss=50.0), {"key": "broken", "status": "failed"}]
    assert [r["key"] for r in pareto_front(records)] == ["fastest-but-bad", "fast", "small", "accurate"]
    assert choose(records, "latency")["key"] == "fast"  # the fastest one that meets the goals
    assert choose(records, "accuracy")["key"] == "accurate"
    assert choose(records, "memory")["key"] == "small"


def test_no_passing_candidate_means_no_choice_and_the_closest_are_named():
    records = [rec("a", 2.0, 0.9, violations=["x", "y"]), rec("b", 1.0, 0.9, violations=["x"]), rec("c", 3.0, 0.9, violations=["x"])]
    assert choose(records, "latency") is None
    assert [r["key"] for r in closest(records, 2)] == ["b", "c"]


# -- journal ---------------------------------------------------------------------------
def test_journal_survives_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.add({"key": "a", "kind": "candidate", "elapsed_s": 2.0})
    journal.add({"key": "b", "kind": "probe", "elapsed_s": 1.0})
    with path.open("a") as handle:
        handle.write(json.dumps({"key": "c", "kind": "candidate"})[:12])  # killed mid-write
    reopened = Journal(path)
    assert "a" in reopened and "b" in reopened and "c" not in reopened
    assert reopened.elapsed_s() == 3.0 and [r["key"] for r in reopened.candidates()] == ["a"]


# -- the space -------------------------------------------------------------------------
def test_stage_two_order_follows_the_priority():
    from edgeopt.search.space import SearchSpace, fine_tune_candidates

    space = SearchSpace(prune_ratios=(0.5, 0.75), resolutions=(0.75,), students=("torchvision:mobilenet_v2",), epochs=2)
    base = Recipe(model="m.safetensors", data="d")
    export = recipe(steps=())
    labels = {p: [r.label for r in fine_tune_candidates(space, base, p, [export], 64, ["openvino"])]
              for p in ("latency", "accuracy", "memory")}
    assert labels["latency"][0].startswith("prune 0.5") and labels["latency"][-1] == "openvino int8 QAT (3 ep)"
    assert labels["accuracy"][0] == "openvino int8 QAT (3 ep)" and labels["accuracy"][1].startswith("prune 0.5")
    assert labels["memory"][0].startswith("prune 0.75") and not any("QAT" in label for label in labels["memory"])
    assert "distil→same arch @48px (2 ep) → onnxruntime int8 aware" in labels["latency"]
    # torchvision students downsample 32x: not offered for 8x8 inputs
    small = [r.label for r in fine_tune_candidates(space, base, "latency", [export], 8, [])]
    assert not any("mobilenet" in label for label in small) and len(small) == 3


def test_choice_is_a_function_of_the_records_not_their_order():
    records = [rec("a", 1.0, 0.95), rec("b", 1.0, 0.96), rec("c", 2.0, 0.99)]
    for ordering in (records, records[::-1], records[1:] + records[:1]):
        assert choose(ordering, "latency")["key"] == "b"  # equal latency: the more accurate
        assert [r["key"] for r in pareto_front(ordering)] == ["b", "c"]
