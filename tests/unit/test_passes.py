"""Passes: the registry, their configs, and a pass from outside edgeopt run through the builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.backends import open_session
from edgeopt.core.errors import ConfigError
from edgeopt.models.sources import save_checkpoint
from edgeopt.passes import FineTune, Pass, all_passes, get_pass, register_pass
from edgeopt.pipeline.builder import BuildContext, build, build_model
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from tests.helpers import edgeopt


def test_every_technique_is_one_registered_pass_with_a_frozen_validated_config():
    assert {p.name for p in all_passes()} >= {"prune", "sparsify", "distill", "qat", "finetune"}
    for technique in all_passes():
        config = technique.config()
        assert type(config).from_dict(config.to_dict()) == config  # serialisable for recipes
        with pytest.raises(Exception):
            config.epochs = 3  # frozen
    with pytest.raises(ConfigError, match="has no setting"):
        get_pass("prune").config(ratio=0.5, nonsense=1)
    with pytest.raises(ConfigError, match="fine-tuning epochs"):
        FineTune(epochs=-1)
    with pytest.raises(ConfigError, match="already registered"):
        register_pass(type("Prune", (get_pass("finetune").__class__,), {"name": "prune"})())


@pytest.fixture
def saved(trained_digits, tmp_path):
    model, _, _, _ = trained_digits
    model.labels = [str(i) for i in range(10)]
    return save_checkpoint(model, tmp_path / "digits.safetensors")


def test_a_pass_from_outside_edgeopt_runs_through_the_builder(saved, trained_digits, tmp_path):
    import tests.plugins.scale_logits  # noqa: F401  (registers the pass, as a user's module would)

    step = Step.of("scale_logits", factor=0.25)
    assert isinstance(step.technique, Pass) and step.module == "tests.plugins.scale_logits"
    recipe = Recipe(str(saved), "digits", steps=(step,), export=ExportConfig("onnxruntime"))
    assert recipe.label == "scale logits ×0.25 → onnxruntime fp32"
    context = BuildContext.create(recipe, tmp_path / "work", show_progress=False)
    _, artifact = build(recipe, context, tmp_path / "scaled")
    model = trained_digits[0]
    batch = model.input_spec.example(batch=4, seed=2)
    expected = model.reference()(batch)[0] * 0.25
    np.testing.assert_allclose(open_session(artifact.path).run([batch])[0], expected, rtol=1e-4, atol=1e-5)
    assert artifact.manifest["recipe"]["steps"][0] == {"kind": "scale_logits", "module": "tests.plugins.scale_logits",
                                                       "factor": 0.25}


def test_a_recipe_with_an_outside_pass_rebuilds_in_a_fresh_process(saved, tmp_path):
    import tests.plugins.scale_logits  # noqa: F401

    recipe = Recipe(str(saved), "digits", steps=(Step.of("scale_logits", factor=0.5),), export=ExportConfig("eager"))
    written, root = str(recipe.write(tmp_path / "recipe.toml")), str(Path(__file__).resolve().parents[2])
    # The recipe names the plugin's module, but a recipe is a file: the user names the module to import
    refused = edgeopt("build", written, "--out", str(tmp_path / "refused"), cwd=root)
    assert refused.returncode == 1 and "--plugin tests.plugins.scale_logits" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused").exists()
    proc = edgeopt("build", written, "--out", str(tmp_path / "built"), "--plugin", "tests.plugins.scale_logits", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "scale logits ×0.5 → eager fp32" in proc.stdout


def test_passes_return_new_models_and_leave_theirs_alone(saved, tmp_path):
    recipe = Recipe(str(saved), "digits", steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 0}),))
    context = BuildContext.create(recipe, tmp_path / "work", show_progress=False)
    before = {k: v.clone() for k, v in context.baseline.module.state_dict().items()}
    pruned = build_model(recipe, context)
    after = context.baseline.module.state_dict()
    assert all((before[k] == after[k]).all() for k in before)  # the teacher is untouched
    assert sum(p.numel() for p in pruned.module.parameters()) < sum(v.numel() for v in before.values()) / 2
    assert context.model_path(recipe).is_file()  # cached for the next recipe that shares the step
