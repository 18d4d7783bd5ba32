import pickle

import numpy as np
import pytest
import torch

from edgeopt.core.errors import ConfigError, ModelSourceError
from edgeopt.models.sources import load_model, save_checkpoint
from edgeopt.core.spec import InputSpec


def test_torchvision_source_with_kwargs_and_default_input():
    model = load_model("torchvision:resnet18?num_classes=6")
    assert model.input_spec.shape == (1, 3, 224, 224)
    assert model.task == "classification"
    assert model.arch == "torchvision:resnet18?num_classes=6"
    assert model.module.fc.out_features == 6
    assert not model.module.training


def test_unknown_torchvision_name_suggests_close_matches():
    with pytest.raises(ModelSourceError, match="did you mean mobilenet_v2"):
        load_model("torchvision:mobilenetv2")


def test_unknown_source_and_missing_files():
    with pytest.raises(ModelSourceError, match="not understood"):
        load_model("resnet18")
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_model("missing.onnx")
    with pytest.raises(ModelSourceError, match="cannot import"):
        load_model("no_such_package_xyz.models:factory")
    with pytest.raises(ModelSourceError, match="has no attribute"):
        load_model("edgeopt.models.zoo:no_such_factory")
    with pytest.raises(ModelSourceError, match="unexpected keyword"):
        load_model("edgeopt.models.zoo:tiny_cnn?colour=blue")
    with pytest.raises(ModelSourceError, match="not a torch.nn.Module"):
        load_model("builtins:dict")


def test_factory_source_infers_input_from_first_layer():
    model = load_model("edgeopt.models.zoo:tiny_cnn?in_channels=1&num_classes=4")
    assert model.input_spec.shape == (1, 1, 224, 224)
    assert model.reference()(model.input_spec.example(batch=2))[0].shape == (2, 4)
    model = load_model("torch.nn:Linear?in_features=5&out_features=2")
    assert model.input_spec.shape == (1, 5)


def test_uninferable_input_asks_for_it():
    with pytest.raises(ConfigError, match="--input"):
        load_model("torch.nn:ReLU")
    assert load_model("torch.nn:ReLU", input="2x7").input_spec.shape == (2, 7)


def test_safetensors_checkpoint_carries_arch_input_and_labels(tmp_path):
    model = load_model("edgeopt.models.zoo:tiny_cnn?num_classes=3", input="1x3x16x16")
    model.labels = ["a", "b", "c"]
    path = save_checkpoint(model, tmp_path / "ckpt.safetensors")
    again = load_model(str(path))
    assert again.input_spec.shape == (1, 3, 16, 16) and again.labels == ["a", "b", "c"]
    x = model.input_spec.example(batch=2)
    np.testing.assert_array_equal(model.reference()(x)[0], again.reference()(x)[0])


def test_state_dict_pt_with_arch(tmp_path):
    module = load_model("edgeopt.models.zoo:tiny_cnn?seed=5").module
    torch.save({"state_dict": module.state_dict()}, tmp_path / "w.pt")
    with pytest.raises(ModelSourceError, match="--arch"):
        load_model(str(tmp_path / "w.pt"))
    model = load_model(str(tmp_path / "w.pt"), arch="edgeopt.models.zoo:tiny_cnn", input="1x3x16x16")
    assert torch.equal(model.module.head.weight, module.head.weight)
    with pytest.raises(ModelSourceError, match="does not fit"):
        load_model(str(tmp_path / "w.pt"), arch="edgeopt.models.zoo:tiny_cnn?width=8")


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/edgeopt-pwned", "w"))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = "/tmp/edgeopt-pwned"
    import os

    if os.path.exists(marker):
        os.remove(marker)
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"state_dict": _Exploit()}, handle)
    with pytest.raises(ModelSourceError, match="never unpickles"):
        load_model(str(tmp_path / "evil.pt"), arch="edgeopt.models.zoo:tiny_cnn")
    assert not os.path.exists(marker)


def test_truncated_checkpoints_are_clear_errors(tmp_path):
    model = load_model("edgeopt.models.zoo:tiny_cnn")
    path = save_checkpoint(model, tmp_path / "c.safetensors")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelSourceError, match="truncated or corrupt"):
        load_model(str(path))
    torch.save(model.module.state_dict(), tmp_path / "c.pt")
    (tmp_path / "c.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:300])
    with pytest.raises(ModelSourceError, match="truncated or corrupt"):
        load_model(str(tmp_path / "c.pt"), arch="edgeopt.models.zoo:tiny_cnn")


def test_onnx_source_and_truncated_onnx(tmp_path):
    torch.onnx.export(load_model("edgeopt.models.zoo:tiny_cnn").module, (torch.zeros(1, 3, 32, 32),), tmp_path / "m.onnx",
                      dynamo=True, input_names=["pixels"], verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    model = load_model(str(tmp_path / "m.onnx"))
    assert model.kind == "onnx" and model.input_spec == InputSpec((1, 3, 32, 32), name="pixels")
    assert model.reference()(model.input_spec.example(batch=3))[0].shape == (3, 10)
    data = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "bad.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelSourceError, match="not a valid ONNX model"):
        load_model(str(tmp_path / "bad.onnx"))


def test_timm_source_builds_with_its_own_preprocessing_and_records_its_arch(tmp_path):
    pytest.importorskip("timm", reason="timm is not installed (pip install 'edgeopt[timm]')")
    model = load_model("timm:resnet18?num_classes=3&in_channels=1")
    assert model.input_spec.shape == (1, 1, 224, 224) and model.input_spec.preprocess.channels == "GRAY"
    assert model.arch == "timm:resnet18?num_classes=3&in_channels=1"
    assert model.reference()(model.input_spec.example(batch=2))[0].shape == (2, 3)
    saved = save_checkpoint(model, tmp_path / "timm.safetensors")
    again = load_model(str(saved))  # a timm name in a file is known: it resolves
    np.testing.assert_array_equal(again.reference()(model.input_spec.example())[0],
                                  model.reference()(model.input_spec.example())[0])
    with pytest.raises(ModelSourceError, match="timm has no model 'resnet19'; did you mean"):
        load_model("timm:resnet19")


def test_a_file_cannot_make_timm_or_torchvision_fetch_or_read_anything(tmp_path):
    pytest.importorskip("timm", reason="timm is not installed (pip install 'edgeopt[timm]')")
    from safetensors.numpy import save_file

    for arch, phrase in (("timm:resnet18?checkpoint_path=/tmp/x.pth", "checkpoint_path="),
                         ("timm:resnet18?pretrained=true", "download weights"),
                         ("torchvision:resnet18?weights=DEFAULT", "download weights")):
        path = tmp_path / "m.safetensors"
        save_file({"w": np.zeros(1, np.float32)}, str(path), metadata={"edgeopt.arch": arch})
        with pytest.raises(ModelSourceError, match=phrase) as refused:
            load_model(str(path))
        assert str(path) in str(refused.value)
    with pytest.raises(ModelSourceError, match="checkpoint_path="):  # it would unpickle: not even from the user
        load_model("timm:resnet18?checkpoint_path=/tmp/x.pth")


def test_an_architecture_argument_its_factory_cannot_take_is_one_error():
    with pytest.raises(ModelSourceError, match=r"edgeopt.models.zoo:mlp\(hidden=10000000000\) failed: .*check the "):
        load_model("edgeopt.models.zoo:mlp?hidden=10000000000")  # 20 TB of weights: the allocator refuses at once


def test_a_checkpoint_naming_an_architecture_by_its_old_module_still_loads(tmp_path):
    """Checkpoints made before edgeopt.models existed record ``edgeopt.zoo:...``; they load as edgeopt's
    own architecture, and a module merely named like it is not thereby trusted."""
    from dataclasses import replace

    model = load_model("edgeopt.models.zoo:tiny_cnn?num_classes=4", input="1x3x16x16")
    path = save_checkpoint(replace(model, arch="edgeopt.zoo:tiny_cnn?num_classes=4"), tmp_path / "old.safetensors")
    loaded = load_model(str(path))
    assert loaded.arch == "edgeopt.models.zoo:tiny_cnn?num_classes=4"  # saved again, it names the module now
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded.module.eval()(x), model.module.eval()(x))
    other = save_checkpoint(replace(model, arch="edgeopt.zoology:tiny_cnn"), tmp_path / "other.safetensors")
    with pytest.raises(ModelSourceError, match="--arch"):
        load_model(str(other))
