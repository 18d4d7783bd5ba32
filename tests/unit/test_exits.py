"""Early exits: networks cut where their forward says, heads trained by distillation, stages compiled and run
so that computation stops at the exit, thresholds calibrated within a budget, and a staged model's record
refused when it is not what was written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgeopt.core.errors import ArtifactError, ConfigError
from edgeopt.core.exits import EXITS_FILE, NEVER, StagedExits
from edgeopt.models.exits import EarlyExitNet, blocks_of
from edgeopt.models.sources import load_model
from edgeopt.pipeline.exits import calibrate, exits_taken, outcome, stage_logits
from edgeopt.runtime.exits import ExitRunner, task_of_exits
from edgeopt.core.exits import confidence


@pytest.mark.parametrize("source, last_blocks", [
    ("torchvision:resnet18?num_classes=6", ["layer4", "avgpool", "flatten", "fc"]),
    ("torchvision:mobilenet_v2?num_classes=6", ["features.18", "pool", "flatten", "classifier"]),
    ("torchvision:shufflenet_v2_x0_5?num_classes=6", ["conv5", "pool", "flatten", "fc"]),
])
def test_a_network_is_read_as_its_blocks_in_order(source, last_blocks):
    module = load_model(source, input="1x3x64x64").module.eval()
    example = torch.randn(2, 3, 64, 64)
    blocks = blocks_of(module, example)
    assert [name for name, _ in blocks][-4:] == last_blocks
    net = EarlyExitNet.attach(module, example, [blocks[4][0]], classes=6)
    assert torch.equal(net(example), module(example))  # the last exit is the model as it was
    assert [tuple(t.shape) for t in net.exits(example)] == [(2, 6), (2, 6)]


def test_a_network_whose_forward_is_not_its_children_in_order_is_refused():
    module = load_model("torchvision:squeezenet1_1?num_classes=6", input="1x3x64x64").module.eval()
    with pytest.raises(ConfigError, match="not its children in order"):
        blocks_of(module, torch.randn(2, 3, 64, 64))


def test_a_cut_that_is_not_a_block_names_the_blocks():
    module = load_model("torchvision:resnet18?num_classes=6", input="1x3x64x64").module.eval()
    with pytest.raises(ConfigError, match="layer1, layer2"):
        EarlyExitNet.attach(module, torch.randn(2, 3, 64, 64), ["layer9"], classes=6)


@pytest.mark.parametrize("cuts, phrase", [(["flatten"], "not a feature map"), (["layer1", "layer1"], "twice")])
def test_a_cut_after_the_feature_maps_or_named_twice_is_refused(cuts, phrase):
    module = load_model("torchvision:resnet18?num_classes=6", input="1x3x64x64").module.eval()
    with pytest.raises(ConfigError, match=phrase):
        EarlyExitNet.attach(module, torch.randn(2, 3, 64, 64), cuts, classes=6)


def test_training_the_heads_leaves_the_backbone_and_its_batch_norm_statistics_alone():
    module = load_model("torchvision:resnet18?num_classes=6", input="1x3x32x32").module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    net = EarlyExitNet.attach(module, torch.randn(2, 3, 32, 32), ["layer2"], classes=6).train()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = sum(out.sum() for out in net.exits(torch.randn(4, 3, 32, 32))[:-1])
    loss.backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert not any(p.requires_grad for p in net.stages.parameters())


def _logits(rows: list[list[list[float]]]) -> list[np.ndarray]:
    return [np.asarray(r, np.float32) for r in rows]


def test_calibration_keeps_each_budget_and_spends_less_as_it_grows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    # exit 0 is right 80% of the time, confident when right; the final exit always right
    early = np.where((rng.random(400) < 0.8)[:, None], np.eye(4)[labels] * 6, rng.normal(0, 1, (400, 4)))
    final = np.eye(4)[labels] * 8
    logits = [early.astype(np.float32), final.astype(np.float32)]
    settings = calibrate(logits, labels, exit_macs=[30, 110], full_macs=100, budgets=(0, 2, 10))
    assert settings[0].name == "accuracy-first" and settings[0].thresholds == (NEVER,)
    assert settings[-1].name == "fastest" and settings[-1].thresholds == (0.0,)
    named = {s.name: s for s in settings}
    for budget in (0, 2, 10):
        setting = named.get(f"max-drop-{budget}")
        if setting is not None:
            assert setting.validation["top1"] >= 1.0 - budget / 100 - 1e-9
    macs = [s.validation["mean_macs_share"] for s in settings]
    assert macs == sorted(macs, reverse=True)
    assert named["max-drop-10"].validation["mean_macs_share"] < 0.6  # most images leave at the first exit


def test_outcome_counts_the_exit_each_row_takes():
    logits = _logits([[[5, 0], [0, 0]], [[0, 9], [0, 9]]])
    taken = exits_taken([confidence(logits[0])], [0.9])
    assert taken.tolist() == [0, 1]
    top1, macs = outcome(logits, np.array([0, 1]), [10, 100], 100, [0.9])
    assert top1 == 1.0 and macs == pytest.approx(0.55)


@pytest.mark.slow  # trains a digits model and its exits (20 s); the docs test runs `edgeopt exits` too
def test_the_runner_stops_where_the_thresholds_say_and_agrees_with_calibration(staged_digits):
    from edgeopt.images import to_input
    from edgeopt.tasks import get_task

    _, staged = staged_digits
    test = get_task("classification").load("digits", staged.input_spec).test
    logits = stage_logits(staged.stages, test, staged.input_spec)
    batch = to_input(test.images, staged.input_spec)
    for setting in staged.settings:
        answers, taken = ExitRunner.load(staged, setting.name).route(batch)
        expected = exits_taken([confidence(l) for l in logits[:-1]], setting.thresholds)
        np.testing.assert_array_equal(taken, expected)
        predictions = np.stack([l.argmax(1) for l in logits])[expected, np.arange(len(batch))]
        np.testing.assert_array_equal(answers.argmax(1), predictions)


@pytest.mark.slow  # trains a digits model and its exits (20 s); the docs test runs `edgeopt exits` too
def test_accuracy_first_gives_the_models_own_answers(staged_digits):
    import edgeopt
    from edgeopt.images import to_input
    from edgeopt.tasks import get_task

    model, staged = staged_digits
    test = get_task("classification").load("digits", staged.input_spec).test
    batch = to_input(test.images, staged.input_spec)
    answers, taken = ExitRunner.load(staged, "accuracy-first").route(batch)
    whole = load_model(str(model)).reference()(batch)[0]
    assert (taken == len(staged.stages) - 1).all()
    np.testing.assert_allclose(answers, whole, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # trains a digits model and its exits (20 s); the docs test runs `edgeopt exits` too
def test_a_swapped_stage_or_a_malformed_record_is_refused(staged_digits, tmp_path):
    _, staged = staged_digits
    copy = tmp_path / "exits"
    shutil.copytree(staged.path, copy)
    shutil.rmtree(copy / "s1")
    shutil.copytree(copy / "s0", copy / "s1")
    with pytest.raises(ArtifactError, match="s1 is not the artifact"):
        StagedExits.open(copy)
    shutil.rmtree(copy)
    shutil.copytree(staged.path, copy)
    record = json.loads((copy / EXITS_FILE).read_text())
    record["settings"][0]["thresholds"] = [2.0] * (len(staged.stages) - 1)
    (copy / EXITS_FILE).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match="one threshold in"):
        StagedExits.open(copy)
    record = json.loads((staged.path / EXITS_FILE).read_text())
    record["settings"][-1]["latency_ms"] = {"1": {"p50": "fast", "p99": 1.0}}
    (copy / EXITS_FILE).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match="setting fastest: latency at batch 1 needs positive p50"):
        StagedExits.open(copy)
    for change, phrase in ((lambda r: r["settings"][0].pop("latency_ms"), "timed at the same batch sizes"),
                           (lambda r: r.update(settings=r["settings"] * 9), "1 to 16 threshold settings"),
                           (lambda r: r["settings"][0].update(name="a b/../c"), "a name of its own")):
        record = json.loads((staged.path / EXITS_FILE).read_text())
        change(record)
        (copy / EXITS_FILE).write_text(json.dumps(record))
        with pytest.raises(ArtifactError, match=phrase):
            StagedExits.open(copy)
    record = json.loads((staged.path / EXITS_FILE).read_text())
    (copy / EXITS_FILE).write_text(json.dumps({**record, "task": "detection"}))  # its answers would need anchors
    with pytest.raises(ConfigError, match="no recorded output convention"):
        task_of_exits(StagedExits.open(copy))


@pytest.mark.slow  # trains a digits model and its exits (20 s)
def test_each_setting_is_timed_on_real_images_and_a_controller_climbs_them(staged_digits, tmp_path):
    from edgeopt.runtime.controller import Backlog, ControlConfig, RungController

    _, staged = staged_digits
    assert staged.timed and all(set(s.latency_ms) == {1, 8} for s in staged.settings)
    assert all(0 < s.latency_ms[b]["p50"] <= s.latency_ms[b]["p99"] for s in staged.settings for b in (1, 8))
    control = RungController.for_exits(staged, ControlConfig(target_ms=1e6), max_batch=8)
    assert [r.name for r in control.rungs] == [s.name for s in staged.settings]
    assert control.choose(Backlog(oldest_age_ms=0, rows=1)) == 0  # all the time in the world: accuracy first
    # a later setting leaves at least as early, so it never plans as slower (timing noise between two alike is capped)
    for batch in (1, 8):
        planned = [r.measured(batch) for r in control.rungs]
        assert planned == sorted(planned, reverse=True)
    tight = RungController.for_exits(staged, ControlConfig(target_ms=1e-6), max_batch=8)
    assert tight.choose(Backlog(oldest_age_ms=0, rows=1)) == len(staged.settings) - 1  # none fits: the fastest
    copy = tmp_path / "untimed"
    shutil.copytree(staged.path, copy)
    record = json.loads((copy / EXITS_FILE).read_text())
    for setting in record["settings"]:
        del setting["latency_ms"]  # as an older edgeopt wrote it: still a valid model, not servable under a target
    (copy / EXITS_FILE).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="build it again with `edgeopt exits`"):
        RungController.for_exits(StagedExits.open(copy), ControlConfig(target_ms=50), max_batch=8)
