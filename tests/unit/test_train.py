"""The shared training loop: learns, checkpoints every epoch, resumes to identical weights."""

import pytest
import torch

from edgeopt.tasks.classification.data import input_spec_for, load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.passes.train import TrainConfig, Validator, fit, score_module
from edgeopt.tasks import get_task
from edgeopt.models.zoo import tiny_cnn

TASK = get_task("classification")

# Augmentation on: resuming must replay the per-epoch shuffling and augmentation draws.
CONFIG = TrainConfig(epochs=3, batch_size=64, optimizer="adamw", lr=0.01, augment=True, seed=3)


@pytest.fixture(scope="module")
def digits():
    splits = load_dataset("digits")
    train, val = splits.train.split(0.1, seed=0)
    return train.subset(range(600)), val, input_spec_for(splits.train)


def _model():
    return tiny_cnn(num_classes=10, in_channels=1, seed=1)


def _fit(module, digits, config=CONFIG, loss=None, **kwargs):
    train, val, spec = digits
    return fit(module, train, val, spec, config, loss or TASK.training_loss(), Validator(TASK, val, spec),
               show_progress=False, **kwargs)


def accuracy_of(module, dataset, spec):
    return score_module(module, dataset, spec, TASK)["top1"]


def test_fit_learns_and_keeps_the_best_epoch(digits):
    train, val, spec = digits
    model = _model()
    before = accuracy_of(model, val, spec)
    result = _fit(model, digits)
    assert result.epochs_run == 3 and len(result.history) == 3
    assert result.best_val == max(h["val"] for h in result.history)
    assert accuracy_of(model, val, spec) == pytest.approx(result.best_val)
    assert result.best_val > before + 0.25


class _Killed(Exception):
    pass


def test_interrupted_mid_epoch_resumes_to_identical_weights(digits, tmp_path):
    reference = _model()
    _fit(reference, digits)

    steps = {"n": 0}
    plain = TASK.training_loss()

    def dies_in_epoch_two(module, inputs, labels):
        steps["n"] += 1
        if steps["n"] == 10 + 4:  # 600 images in batches of 64: 10 steps an epoch; dies at step 4 of epoch 2
            raise _Killed()
        return plain(module, inputs, labels)

    checkpoint = tmp_path / "run.pt"
    interrupted = _model()
    with pytest.raises(_Killed):
        _fit(interrupted, digits, loss=dies_in_epoch_two, checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1

    resumed = _model()
    result = _fit(resumed, digits, checkpoint=checkpoint, resume=True)
    assert result.epochs_run == 3 and len(result.history) == 3
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_resume_refuses_a_checkpoint_from_other_settings(digits, tmp_path):
    _fit(_model(), digits, TrainConfig(epochs=1, seed=3), checkpoint=tmp_path / "c.pt")
    with pytest.raises(ConfigError, match="other settings"):
        _fit(_model(), digits, TrainConfig(epochs=2, seed=3), checkpoint=tmp_path / "c.pt", resume=True)


def test_early_stopping_and_config_validation(digits):
    result = _fit(_model(), digits, TrainConfig(epochs=6, lr=1e-9, patience=1, augment=False))
    assert result.stopped_early and result.epochs_run < 6
    with pytest.raises(ConfigError):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)
