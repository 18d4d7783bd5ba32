"""The search's deadline: long work checks it and stops cleanly; accuracy-aware INT8 costs log2(nodes) evaluations."""

from __future__ import annotations

import math

import pytest
import torch

from edgeopt.backends._sensitivity import keep_in_float, max_evaluations
from edgeopt.tasks.classification.data import input_spec_for, load_dataset
from edgeopt.core.deadline import NO_DEADLINE, BudgetExhausted, Deadline
from edgeopt.passes.train import TrainConfig, Validator, fit
from edgeopt.core.quantization import Validation
from edgeopt.tasks import get_task
from edgeopt.models.zoo import tiny_cnn

TASK = get_task("classification")


class StopAfter:
    """A deadline that passes at its ``checks``-th check: deterministic, where a clock is not."""

    def __init__(self, checks: int) -> None:
        self.left, self.seen = checks, []

    def check(self, step: str = "", done: int | None = None, total: int | None = None) -> None:
        self.seen.append((step, done, total))
        self.left -= 1
        if self.left < 0:
            raise BudgetExhausted(step, done, total)


# -- the deadline ----------------------------------------------------------------------
def test_a_deadline_reports_each_check_and_raises_once_passed():
    heard = []
    ahead = Deadline.after(60.0, on_check=lambda *progress: heard.append(progress))
    ahead.check("calibration samples", 3, 300)
    assert heard == [("calibration samples", 3, 300)] and 59 < ahead.remaining() <= 60 and not ahead.expired
    passed = ahead.reporting_to(None)
    assert passed.at == ahead.at and passed.on_check is None
    with pytest.raises(BudgetExhausted, match=r"ran out during training batches \(7/20\)") as caught:
        Deadline.after(-1.0).check("training batches", 7, 20)
    assert caught.value.step == "training batches"
    NO_DEADLINE.check("anything")  # never expires
    assert NO_DEADLINE.remaining() == math.inf


# -- training stops between batches, and resumes to the same weights --------------------
@pytest.fixture(scope="module")
def digits():
    splits = load_dataset("digits")
    train, val = splits.train.split(0.1, seed=0)
    return train.subset(range(600)), val, input_spec_for(splits.train)


def _fit(module, digits, **kwargs):
    train, val, spec = digits
    config = TrainConfig(epochs=3, batch_size=64, optimizer="adamw", lr=0.01, augment=True, seed=3)
    return fit(module, train, val, spec, config, TASK.training_loss(), Validator(TASK, val, spec), show_progress=False,
               **kwargs)


def test_training_stops_at_the_deadline_with_its_last_epoch_checkpointed_and_resumes_exactly(digits, tmp_path):
    reference = tiny_cnn(num_classes=10, in_channels=1, seed=1)
    _fit(reference, digits)

    checkpoint = tmp_path / "run.pt"
    # 10 batches an epoch, a check before each epoch and between its batches (none after its last: the
    # finished epoch is validated and saved first): the 11th check is at the start of epoch 2
    late = StopAfter(10)  # passes as epoch 1's last batch runs: the epoch is kept all the same
    with pytest.raises(BudgetExhausted, match="training batches"):
        _fit(tiny_cnn(num_classes=10, in_channels=1, seed=1), digits, checkpoint=checkpoint, deadline=late)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1 and late.seen[-1] == ("training batches", 10, 30)
    checkpoint.unlink()
    deadline = StopAfter(10 + 4)  # passes in epoch 2, after its 4th batch
    with pytest.raises(BudgetExhausted, match="training batches"):
        _fit(tiny_cnn(num_classes=10, in_channels=1, seed=1), digits, checkpoint=checkpoint, deadline=deadline)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert deadline.seen[-1] == ("training batches", 14, 30)  # the progress it reported: 14 of 30 batches

    resumed = tiny_cnn(num_classes=10, in_channels=1, seed=1)
    assert _fit(resumed, digits, checkpoint=checkpoint, resume=True).epochs_run == 3
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_a_resumed_search_plans_only_the_epochs_a_stopped_fine_tune_has_left(digits, tmp_path):
    """--resume with a few minutes more must not refuse a 15-epoch fine-tune stopped at epoch 12 as 15 epochs."""
    from edgeopt.pipeline.builder import BuildContext
    from edgeopt.pipeline.recipe import Recipe, Step

    recipe = Recipe("m", "digits", steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 3}),
                                          Step.of("distill", student="edgeopt.models.zoo:tiny_cnn", fine_tune={"epochs": 4})))
    context = BuildContext(baseline=None, splits=None, task=TASK, workdir=tmp_path)
    assert context.epochs_left(recipe) == 3 + 4
    with pytest.raises(BudgetExhausted):  # the second step's training, stopped in its second epoch
        _fit(tiny_cnn(num_classes=10, in_channels=1, seed=1), digits, checkpoint=context.checkpoint_path(recipe, 2),
             deadline=StopAfter(10 + 4))
    assert context.epochs_left(recipe) == 3 + 4 - 1
    context.model_path(recipe, 1).parent.mkdir(parents=True, exist_ok=True)
    context.model_path(recipe, 1).touch()  # the first step's model is cached
    assert context.epochs_left(recipe) == 4 - 1
    context.model_path(recipe, 2).touch()
    assert context.epochs_left(recipe) == 0
    assert BuildContext(None, None, TASK, tmp_path, resume=False).epochs_left(recipe) == 0
    context.model_path(recipe, 2).unlink()
    assert BuildContext(None, None, TASK, tmp_path, resume=False).epochs_left(recipe) == 4  # starts over
    context.checkpoint_path(recipe, 2).write_bytes(b"not a checkpoint")
    assert context.epochs_left(recipe) == 4


# -- accuracy-aware INT8: a bisection over how many ranked layers stay in float ----------
def _validation(max_drop: float = 1.0) -> Validation:
    return Validation(inputs=None, score=None, max_drop=max_drop)


def _counted(threshold: int | None):
    """(build, score, calls) where keeping the first ``threshold`` ranked layers in float holds the drop."""
    calls = {"build": 0, "score": 0}

    def build(kept: list[str]) -> int:
        calls["build"] += 1
        return len(kept)

    def score(k: int) -> float:
        calls["score"] += 1
        holds = threshold is not None and k >= threshold
        return 0.95 if holds else 0.90 + k * 1e-6  # a little better with each layer in float, never enough

    return build, score, calls


@pytest.mark.parametrize("layers", [1, 2, 5, 16, 100, 212, 1000, 4096])
def test_full_evaluations_grow_with_the_log_of_the_layers(layers):
    ranked = [f"node{i}" for i in range(layers)]
    for threshold in sorted({0, 1, layers // 3, layers - 1, layers}):
        build, score, calls = _counted(threshold)
        result = keep_in_float(ranked, build, score, fp32_score=0.95, validation=_validation())
        assert result.reached and result.excluded == ranked[:threshold]  # the fewest that hold
        assert calls["score"] == result.evaluations <= max_evaluations(layers) <= 2 + math.ceil(math.log2(layers))
        assert calls["build"] <= calls["score"]
    assert max_evaluations(212) == 10  # where one evaluation per node cost 212, and a walk up to 212 more


def test_an_unreachable_drop_says_so_and_keeps_the_best_candidate():
    ranked = [f"node{i}" for i in range(100)]
    build, score, calls = _counted(None)
    result = keep_in_float(ranked, build, score, fp32_score=0.95, validation=_validation())
    assert not result.reached and calls["score"] <= max_evaluations(100)
    assert result.candidate == 100 and result.score == max(step["score"] for step in result.steps)
    assert [step["kept_in_float"] for step in result.steps][0] == 0  # all INT8 first


def test_the_bisection_stops_at_the_deadline_between_evaluations():
    build, score, calls = _counted(60)
    deadline = StopAfter(3)
    with pytest.raises(BudgetExhausted, match="accuracy-aware INT8 evaluations"):
        keep_in_float([f"node{i}" for i in range(100)], build, score, 0.95, _validation(), deadline)
    assert calls["score"] == 3 and deadline.seen[-1] == ("accuracy-aware INT8 evaluations", 3, max_evaluations(100))
