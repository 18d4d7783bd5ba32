"""Recipes: stable hashes, TOML round trips, and clear errors for what cannot be a recipe."""

from __future__ import annotations

import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.core.quantization import QuantizationConfig


def recipe(**changes) -> Recipe:
    base = dict(model="m.safetensors", data="digits", steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 3}),),
                export=ExportConfig("onnxruntime", "int8", QuantizationConfig(mode="aware", max_drop=1.0)))
    return Recipe(**{**base, **changes})


def test_recipe_hash_is_stable_and_sensitive(tmp_path):
    a = recipe()
    assert a.hash == recipe().hash and len(a.hash) == 12
    assert a.hash != recipe(steps=(Step.of("prune", ratio=0.75, fine_tune={"epochs": 3}),)).hash
    assert a.hash != recipe(steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 3, "lr": 0.01}),)).hash
    assert a.hash != recipe(seed=1).hash
    path = a.write(tmp_path / "recipe.toml")
    assert path.read_text().startswith(f"# edgeopt recipe {a.hash}")
    assert Recipe.read(path) == a and Recipe.read(path).hash == a.hash


def test_a_partial_fine_tune_keeps_the_pass_defaults():
    distill = Step.of("distill", student="torchvision:mobilenet_v2", fine_tune={"epochs": 4})
    assert distill.config.fine_tune.lr == 0.002 and distill.config.fine_tune.epochs == 4  # distill's own default lr
    qat = Step.of("qat", fine_tune={"epochs": 2})
    assert qat.config.fine_tune.optimizer == "sgd" and not qat.config.fine_tune.distill


def test_untrained_keeps_the_architecture_drops_training_qat_and_aware():
    qat = recipe(steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 3}), Step.of("qat", fine_tune={"epochs": 2})),
                 export=ExportConfig("openvino", "int8", QuantizationConfig(mode="qat")))
    probe = qat.untrained()
    assert [s.epochs for s in probe.steps] == [0] and probe.steps[0].kind == "prune"
    assert probe.export.quantization.mode == "static" and not probe.trains and qat.trains
    assert qat.label == "prune 0.5 (3 ep) → openvino int8 QAT (2 ep)"


def test_invalid_recipes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown pass"):
        Step.of("shrink", ratio=0.5)
    with pytest.raises(ConfigError, match="has no setting"):
        Step.of("prune", ratio=0.5, width=3)
    with pytest.raises(ConfigError, match="apply to int8"):
        ExportConfig("onnxruntime", "fp32", QuantizationConfig())
    with pytest.raises(ConfigError, match="needs a max drop"):
        QuantizationConfig(mode="aware")
    with pytest.raises(ConfigError, match="comes last"):
        recipe(steps=(Step.of("qat"), Step.of("prune")))
    broken = tmp_path / "broken.toml"
    broken.write_text("model = 'x'\n[export\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Recipe.read(broken)
    broken.write_text("format = 2\nmodel = 'x'\n")
    with pytest.raises(ConfigError, match="not a valid recipe"):
        Recipe.read(broken)
    broken.write_text("model = 'x'\ndata = 'd'\n[export]\nbackend = 'eager'\n")
    with pytest.raises(ConfigError, match="layout 1"):
        Recipe.read(broken)
