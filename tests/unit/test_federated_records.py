"""What crosses a federation's network, checked before it touches a model: settings, arrays, replies."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the federated extra (flwr) is not installed")

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict  # noqa: E402

from edgeopt.core.errors import ConfigError, ModelSourceError  # noqa: E402
from edgeopt.core.trust import UntrustedName  # noqa: E402
from edgeopt.federated.settings import FederationSettings, SiteSettings, local_fine_tune, proximal_mu  # noqa: E402
from edgeopt.federated.weights import (MAX_ELEMENTS, describe, read_arrays, rebuild, reply_problem,  # noqa: E402
                                       shapes_of, to_arrays)
from edgeopt.models.sources import load_model  # noqa: E402
from tests.helpers import TINY_INPUT, TINY_SOURCE  # noqa: E402

SERVER = "the federation server"
GOOD_METRICS = {"num-examples": 100, "train-loss": 0.5, "val": 0.9, **SiteSettings(data="d").privacy_record()}


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY_SOURCE, input=TINY_INPUT)


def _config(model, **changes) -> dict:
    settings = FederationSettings(model="m", out="o")
    return {**settings.train_config(), **describe(model), **changes}


def test_a_model_crosses_as_its_arrays_and_description_and_comes_back_identical(tiny):
    import torch

    model = rebuild(_config(tiny), to_arrays(tiny.module), SERVER)
    assert model.arch == tiny.arch and model.input_spec == tiny.input_spec
    for name, tensor in tiny.module.state_dict().items():
        assert torch.equal(model.module.state_dict()[name], tensor) or not tensor.is_floating_point()
    assert all(a.dtype == "float32" for a in to_arrays(tiny.module).values())  # no integer counters leave


@pytest.mark.parametrize("arch", ["os:system", "mypkg.nets:build", "subprocess:run"])
def test_an_architecture_named_by_the_server_is_imported_only_when_it_is_trusted(tiny, arch):
    config = _config(tiny, **{"model/edgeopt.arch": arch})
    with pytest.raises(UntrustedName, match="imports no code a file names"):
        rebuild(config, to_arrays(tiny.module), SERVER)


def test_arrays_of_other_shapes_nan_or_a_claimed_giant_are_refused(tiny):
    arrays = to_arrays(tiny.module)
    name = next(iter(arrays))
    wrong = ArrayRecord({**{k: v for k, v in arrays.items()}, name: Array(np.zeros((3, 3), np.float32))})
    with pytest.raises(ModelSourceError, match="does not run|does not fit"):
        rebuild(_config(tiny), wrong, SERVER)
    poisoned = {k: v.numpy() for k, v in arrays.items()}
    poisoned[name] = np.full_like(poisoned[name], np.nan)
    with pytest.raises(ModelSourceError, match="NaN"):
        rebuild(_config(tiny), ArrayRecord({k: Array(v) for k, v in poisoned.items()}), SERVER)

def _npy(header_shape: tuple[int, ...], payload: bytes) -> bytes:
    import io

    from numpy.lib import format as npy

    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": header_shape})
    return buffer.getvalue() + payload


@pytest.mark.parametrize("declared, header, payload, words", [
    ((2**41,), (2**41,), b"\0" * 16, "more than|holding"),        # a 100-byte reply claiming 8 TiB
    ((4,), (2**41,), b"\0" * 16, "holding"),                       # the declared shape is not the header's
    ((4,), (4,), b"\0" * 8, "bytes do not match"),                  # a truncated body
    ((2**32, 2**32), (2**32, 2**32), b"", "more than|holding"),     # a product that overflows an int64
])
def test_a_record_is_read_only_after_its_npy_header_matches_its_bytes(declared, header, payload, words):
    crafted = ArrayRecord({"w": Array(dtype="float32", shape=declared, stype="numpy.ndarray",
                                      data=_npy(header, payload))})
    with pytest.raises(ModelSourceError, match=words):
        read_arrays(crafted, SERVER)
    assert "w" in reply_problem(_reply(crafted, GOOD_METRICS), {"w": declared})


@pytest.mark.parametrize("field, value, words", [
    ("model/edgeopt.arch", "edgeopt.models.zoo:mlp?hidden=60000", "describes a model of"),
    ("model/edgeopt.input", '{"name": "input", "shape": [1, 3, 9000, 9000]}', "describes an input"),
    ("model/edgeopt.input", '{"name": "input", "shape": [1, 64, 32, 32]}', "describes an input"),
])
def test_a_description_of_a_model_or_input_too_large_is_refused_before_it_is_built(tiny, field, value, words):
    with pytest.raises(ModelSourceError, match=words):
        rebuild(_config(tiny, **{field: value}), to_arrays(tiny.module), SERVER)


@pytest.mark.parametrize("changes, words", [
    ({"epochs": 10_000}, "local epochs"),
    ({"batch-size": 1_000_000}, "local epochs"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"lr": "fast"}, "mistyped"),
])
def test_training_settings_a_server_sends_are_bounded(tiny, changes, words):
    with pytest.raises(ConfigError, match=words):
        local_fine_tune(_config(tiny, **changes))


def test_a_proximal_term_outside_its_range_is_refused():
    assert proximal_mu({"proximal-mu": 0.01}) == 0.01
    for mu in (-1.0, float("nan"), 1e9):
        with pytest.raises(ConfigError, match="proximal"):
            proximal_mu({"proximal-mu": mu})


def _reply(arrays: ArrayRecord, metrics: dict, **more) -> RecordDict:
    return RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), **more})


def test_a_reply_is_aggregated_only_when_it_is_the_model_and_the_same_scalar_metrics(tiny):
    shapes = shapes_of(tiny.module)
    arrays = to_arrays(tiny.module)
    good = GOOD_METRICS
    assert reply_problem(_reply(arrays, good), shapes) is None
    assert "records" in reply_problem(_reply(arrays, good, extra=ConfigRecord({"file": "/data/x.png"})), shapes)
    assert "metrics are" in reply_problem(_reply(arrays, {**good, "pixels": [1.0, 2.0]}), shapes)
    assert "metrics are" in reply_problem(_reply(arrays, {**good, "extra": 1.0}), shapes)  # Flower needs them alike
    assert "metrics are" in reply_problem(_reply(arrays, {"val": 0.9}), shapes)
    assert "finite" in reply_problem(_reply(arrays, {**good, "val": float("nan")}), shapes)
    assert "num-examples" in reply_problem(_reply(arrays, {**good, "num-examples": 0}), shapes)
    assert "num-examples" in reply_problem(_reply(arrays, {**good, "num-examples": 2**62}), shapes)  # a weight grab
    image = ArrayRecord({**dict(arrays.items()), "image": Array(np.zeros((64, 64), np.float32))})
    assert "unexpected ['image']" in reply_problem(_reply(image, good), shapes)
    huge = {k: Array(np.full(v.shape, 3e38, np.float32)) for k, v in arrays.items()}
    assert "beyond" in reply_problem(_reply(ArrayRecord(huge), good), shapes)


def test_settings_cross_as_flower_run_config_and_refuse_wrong_types():
    settings = FederationSettings(model="/m", out="/o", strategy="fedadam", rounds=3, server_lr=0.1)
    assert FederationSettings.from_run_config(settings.to_run_config()) == settings
    with pytest.raises(ConfigError, match="rounds must be a int"):
        FederationSettings.from_run_config({**settings.to_run_config(), "rounds": "3"})
    site = SiteSettings(data="/d.npz", dp_clip=1.0, dp_epsilon=2.0)
    assert SiteSettings.from_node_config(site.to_node_config()) == site
    assert site.noise_std() == pytest.approx(1.0 * np.sqrt(2 * np.log(1.25 / 1e-5)) / 2.0)
    with pytest.raises(ConfigError, match="privacy"):
        SiteSettings(data="/d", dp_clip=1.0, dp_delta=2.0)


def test_the_proximal_term_is_zero_at_the_received_weights_and_grows_away_from_them(tiny):
    import copy

    import torch

    from edgeopt.federated.client_app import proximal_term

    module = copy.deepcopy(tiny.module)
    penalty = proximal_term(module, mu=0.5)
    assert penalty(module).item() == 0.0
    with torch.no_grad():
        next(module.parameters()).add_(1.0)
    moved = next(module.parameters()).numel()
    assert penalty(module).item() == pytest.approx(0.5 / 2 * moved, rel=1e-5)


def test_a_site_that_asks_for_privacy_clips_its_update_and_adds_the_noise_it_reports(tiny):
    """Flower's LocalDpMod, as the site's ClientApp applies it, around an update far larger than the clip:
    what leaves is the clipped update plus Gaussian noise whose spread is the σ the site reports."""
    import time

    from flwr.app import Context, Message, MessageType, Metadata

    from edgeopt.federated.client_app import site_privacy

    arrays = to_arrays(tiny.module)
    arrived = Metadata(run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="", group_id="",
                       created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)  # as the SuperNode hands it
    sent = Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
                   metadata=arrived)

    def train(msg: Message, context: Context) -> Message:
        moved = ArrayRecord({k: Array(v.numpy() + 1.0) for k, v in msg.content.array_records["arrays"].items()})
        return Message(content=RecordDict({"arrays": moved, "metrics": MetricRecord({"num-examples": 10})}),
                       reply_to=msg)

    def sent_back(site: SiteSettings) -> np.ndarray:
        context = Context(run_id=1, node_id=7, node_config=site.to_node_config(), state=RecordDict(), run_config={})
        reply = site_privacy(sent, context, train)
        before = np.concatenate([a.numpy().ravel() for a in arrays.values()])
        return np.concatenate([a.numpy().ravel() for a in reply.content.array_records["arrays"].values()]) - before

    private = SiteSettings(data="/d.npz", dp_clip=0.5, dp_epsilon=0.9, dp_delta=1e-5)
    update = sent_back(private)
    clipped = 0.5 / np.sqrt(update.size)  # the +1 everywhere, scaled to norm 0.5
    assert np.std(update) == pytest.approx(private.noise_std(), rel=0.1)
    assert abs(np.mean(update) - clipped) < 5 * private.noise_std() / np.sqrt(update.size)
    assert private.privacy_record()["dp-noise-std"] == private.noise_std() > 1.0
    assert np.allclose(sent_back(SiteSettings(data="/d")), 1.0)  # without privacy, the update as it was
    assert set(SiteSettings(data="/d").privacy_record().values()) == {0.0}
