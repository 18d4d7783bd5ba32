"""Knowledge distillation: the loss, its settings, and a student that learns from a teacher."""

from __future__ import annotations

import pytest
import torch

from edgeopt.tasks.classification.data import input_spec_for, load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.models.sources import load_model
from edgeopt.passes.base import FineTune
from edgeopt.passes.distill import DistillConfig
from edgeopt.passes.kd import attention_map, distillation_loss
from edgeopt.tasks.classification.task import soft_target_loss
from edgeopt.passes.train import TrainConfig, Validator, fit, score_module
from edgeopt.tasks import get_task

TASK = get_task("classification")


def test_soft_target_loss_is_zero_for_identical_logits_and_scaled_by_t_squared():
    logits = torch.randn(8, 5)
    assert soft_target_loss(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(8, 5)
    small, large = soft_target_loss(other, logits, 1.0), soft_target_loss(other, logits, 3.0)
    assert small > 0 and large > 0 and large != small


def test_loss_mixes_label_and_teacher_terms_by_alpha():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    inputs, labels = torch.randn(16, 4), torch.randint(0, 3, (16,))
    label_only = distillation_loss(teacher, (1, 4), alpha=1.0)(student, inputs, labels)
    expected = torch.nn.functional.cross_entropy(student(inputs), labels)
    assert label_only.item() == pytest.approx(expected.item(), rel=1e-5)
    teacher_only = distillation_loss(teacher, (1, 4), alpha=0.0)(student, inputs, labels)
    assert teacher_only.item() == pytest.approx(soft_target_loss(student(inputs), teacher(inputs), 3.0).item(), rel=1e-5)


def test_the_teacher_sees_the_batch_at_its_own_resolution():
    seen = []
    teacher = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    teacher.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape)))
    student = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    distillation_loss(teacher, (1, 1, 16, 16))(student, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    assert seen == [(2, 1, 16, 16)]


def test_mismatched_outputs_and_bad_settings_are_clear_errors():
    loss = distillation_loss(torch.nn.Linear(4, 3), (1, 4))
    with pytest.raises(ConfigError, match="same outputs"):
        loss(torch.nn.Linear(4, 5), torch.randn(2, 4), torch.tensor([0, 1]))
    for kwargs in ({"temperature": 0}, {"alpha": 1.5}):
        with pytest.raises(ConfigError):
            FineTune(**kwargs)
    for kwargs in ({"hint_weight": 1.0}, {"fine_tune": FineTune(distill=False)}, {"input_size": 0}):
        with pytest.raises(ConfigError):
            DistillConfig(**kwargs)


def test_attention_map_compares_features_of_different_width_and_size():
    student, teacher = torch.randn(2, 8, 4, 4), torch.randn(2, 32, 8, 8)
    assert attention_map(student, (4, 4)).shape == attention_map(teacher, (4, 4)).shape == (2, 16)


def test_a_small_student_learns_from_a_trained_teacher_with_feature_hints():
    splits = load_dataset("digits")
    spec = input_spec_for(splits.train)
    train, val = splits.train.split(0.1, 0)
    torch.manual_seed(0)
    teacher = load_model("edgeopt.models.zoo:tiny_cnn?num_classes=10&in_channels=1&width=16", input=spec).module
    validate = Validator(TASK, val, spec)
    fit(teacher, train, val, spec, TrainConfig(epochs=8, lr=0.05), TASK.training_loss(), validate, show_progress=False)
    student = load_model("edgeopt.models.zoo:tiny_cnn?num_classes=10&in_channels=1&width=8", input=spec).module
    loss = distillation_loss(teacher, spec.shape, hints=(("block1", "block1"),), hint_weight=10.0)
    fit(student, train, val, spec, TrainConfig(epochs=8, lr=0.05), loss, validate, show_progress=False)
    assert score_module(student, splits.test, spec, TASK)["top1"] > 0.6  # ten classes: chance is 0.1
