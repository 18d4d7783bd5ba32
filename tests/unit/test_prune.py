"""Structured pruning (Torch-Pruning) and unstructured sparsity on the tiny model."""

from __future__ import annotations

import pytest
import torch

from edgeopt.core.errors import ConfigError
from edgeopt.measure.profile import count_macs
from edgeopt.models.sources import load_model, save_checkpoint
from edgeopt.passes.prune import PruneConfig, output_layers, prune_channels
from edgeopt.passes.sparsify import sparsify

pytest.importorskip("torch_pruning")


def tiny(width: int = 32, shuffle: bool = False):
    torch.manual_seed(0)
    return load_model(f"edgeopt.models.zoo:tiny_cnn?width={width}&shuffle={shuffle}", input="1x3x32x32")


def example(model):
    return torch.from_numpy(model.input_spec.example(batch=2))


def test_channels_are_physically_removed_across_residual_depthwise_and_concat():
    model = tiny()
    result = prune_channels(model.module, example(model), PruneConfig(ratio=0.5, round_to=1))
    assert result.protected == ["head"]
    assert model.module.stem[0].out_channels == 16  # 32 -> 16: the residual partners shrank with it
    assert model.module.block1.depthwise[0].groups == model.module.block1.depthwise[0].out_channels == 16
    assert model.module.head.out_features == 10  # the output layer is kept whole
    assert result.macs_reduction > 2.5 and result.params_after < result.params_before / 2.5
    assert model.module.eval()(example(model)).shape == (2, 10)


def test_pruned_checkpoint_rebuilds_its_narrower_architecture(tmp_path):
    model = tiny()
    prune_channels(model.module, example(model), PruneConfig(ratio=0.5))
    path = save_checkpoint(model, tmp_path / "pruned.safetensors")
    again = load_model(str(path))
    with torch.no_grad():
        assert torch.equal(again.module.eval()(example(model)), model.module.eval()(example(model)))
    assert sum(p.numel() for p in again.module.parameters()) == sum(p.numel() for p in model.module.parameters())


def test_target_macs_is_reached_with_the_smallest_sufficient_ratio():
    model = tiny()
    before, _ = count_macs(model.module, example(model))
    result = prune_channels(model.module, example(model), PruneConfig(target_macs=before // 3, round_to=1))
    assert result.macs_after <= before // 3
    assert 0.3 < result.ratio < 0.9


def test_round_to_keeps_channel_counts_a_multiple():
    model = tiny(width=48)
    prune_channels(model.module, example(model), PruneConfig(ratio=0.4, round_to=8))
    widths = [m.out_channels for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(width % 8 == 0 for width in widths if width > 8), widths


def test_iterative_steps_call_the_fine_tune_hook_after_each_step():
    model = tiny()
    seen = []
    result = prune_channels(model.module, example(model), PruneConfig(ratio=0.5, steps=3, round_to=1),
                            after_step=lambda step, module: seen.append(step))
    assert seen == [1, 2, 3]
    macs = [step["macs"] for step in result.steps]
    assert macs == sorted(macs, reverse=True) and macs[0] > macs[-1]


def test_ignored_layers_stay_whole_and_unknown_names_are_refused():
    model = tiny()
    prune_channels(model.module, example(model), PruneConfig(ratio=0.5, ignore=("down.0",), round_to=1))
    assert model.module.down[0].out_channels == 64
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        prune_channels(tiny().module, example(model), PruneConfig(ignore=("nope",)))


def test_taylor_importance_needs_a_loss():
    model = tiny()
    with pytest.raises(ConfigError, match="Taylor importance needs labelled data"):
        prune_channels(model.module, example(model), PruneConfig(importance="taylor"))
    labels = torch.tensor([1, 2])
    result = prune_channels(model.module, example(model), PruneConfig(importance="taylor", round_to=1),
                            loss_on_batch=lambda m: torch.nn.functional.cross_entropy(m(example(model)), labels))
    assert result.macs_after < result.macs_before


def test_output_layers_are_found_without_assuming_a_classifier():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Conv2d(3, 8, 3)
            self.boxes = torch.nn.Conv2d(8, 4, 1)
            self.scores = torch.nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.body(x)
            return self.boxes(y), self.scores(y)

    assert output_layers(TwoHeads(), torch.zeros(1, 3, 16, 16)) == ["boxes", "scores"]


def test_untraceable_channel_shuffle_is_one_clear_error():
    model = tiny(shuffle=True)
    with pytest.raises(ConfigError, match="Torch-Pruning cannot follow"):
        prune_channels(model.module, example(model), PruneConfig(ratio=0.5))


@pytest.mark.parametrize("kwargs", [{"ratio": 0.0}, {"ratio": 1.0}, {"importance": "l3"}, {"steps": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        PruneConfig(**kwargs)


def test_unstructured_sparsity_is_permanent_and_reported():
    model = tiny()
    report = sparsify(model.module, 0.6)
    assert report.sparsity == pytest.approx(0.6, abs=0.01)
    assert not any("weight_orig" in key for key in model.module.state_dict())
    assert "no faster" in report.note


def test_pruned_model_exports_and_reloads_on_the_eager_backend(tmp_path):
    from edgeopt.backends import open_session
    from edgeopt.compile import export

    model = tiny()
    prune_channels(model.module, example(model), PruneConfig(ratio=0.5))
    artifact = export(model, "eager", tmp_path / "eager")
    batch = model.input_spec.example(batch=3)
    expected = model.module.eval()(torch.from_numpy(batch)).detach().numpy()
    assert (abs(open_session(artifact.path).run([batch])[0] - expected)).max() < 1e-5


def test_a_frozen_model_is_still_pruned():
    # distillation used to freeze the teacher in place; pruning that same model then silently did nothing
    import torch

    from edgeopt.passes.prune import PruneConfig, prune_channels
    from edgeopt.models.zoo import tiny_cnn

    module = tiny_cnn(width=16)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    result = prune_channels(module, torch.randn(1, 3, 32, 32), PruneConfig(ratio=0.5, round_to=1))
    assert result.macs_after < result.macs_before / 2
