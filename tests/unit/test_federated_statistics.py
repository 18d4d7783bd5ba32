"""The BatchNorm statistics a site measures for the server, and what the server accepts of them."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the federated extra (flwr) is not installed")

from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict  # noqa: E402

from edgeopt.core.errors import ConfigError  # noqa: E402
from edgeopt.federated.settings import FederationSettings  # noqa: E402
from edgeopt.federated.statistics import (measure, pool, pooled_problem, statistic_shapes,  # noqa: E402
                                          statistics_problem)
from edgeopt.models.sources import load_model  # noqa: E402
from tests.helpers import TINY_INPUT, TINY_SOURCE  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY_SOURCE, input=TINY_INPUT)


def _images(count: int, seed: int, brightness: int = 0) -> np.ndarray:
    """Noise images of the tiny model's input (32×32 RGB), ``brightness`` added."""
    noise = np.random.default_rng(seed).integers(0, 120, (count, 32, 32, 3))
    return (noise + brightness).astype(np.uint8)


def test_measuring_leaves_the_model_as_it_was_and_pooling_two_sites_is_measuring_them_together(tiny):
    import torch

    before = {name: tensor.clone() for name, tensor in tiny.module.state_dict().items()}
    tiny.module.eval()
    dark, bright = _images(64, 0), _images(64, 1, brightness=120)  # two sites whose images differ in mean
    one, two = measure(tiny, dark, batch_size=64), measure(tiny, bright, batch_size=64)
    assert not tiny.module.training
    assert all(torch.equal(tensor, before[name]) for name, tensor in tiny.module.state_dict().items())
    assert set(one) == set(statistic_shapes(tiny.module)) and one

    # the first BatchNorm's input depends on no other BatchNorm: one batch of both sites is the pooled population
    first = next(name for name in one if name.endswith("running_mean"))
    variance = first.replace("running_mean", "running_var")
    for dark_count in (64, 16):  # equal sites, then unequal ones (the counts weigh)
        some_dark = dark[:dark_count]
        alone = measure(tiny, some_dark, batch_size=64)
        together = measure(tiny, np.concatenate([some_dark, bright]), batch_size=128)  # one batch holding both
        pooled = pool([(alone, dark_count), (two, 64)])
        np.testing.assert_allclose(pooled[first], together[first], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pooled[variance], together[variance], rtol=1e-3, atol=1e-5)
        # how far the sites' means lie apart counts: above the weighted mean of their variances
        assert np.all(pooled[variance] > (dark_count * alone[variance] + 64 * two[variance]) / (dark_count + 64))
    assert pooled_problem(pooled, statistic_shapes(tiny.module), measured=40, examples=80) is None
    assert "under 50%" in pooled_problem(pooled, statistic_shapes(tiny.module), measured=39, examples=80)
    far = {**pooled, variance: pooled[variance] + 1e9}  # sites whose means lie 10⁴·⁵ apart
    assert "beyond" in pooled_problem(far, statistic_shapes(tiny.module), measured=80, examples=80)


def _reply(stats: dict, metrics: dict) -> RecordDict:
    return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in stats.items()}), "metrics": MetricRecord(metrics)})


def test_a_statistics_reply_is_exactly_the_models_statistics_and_a_count(tiny):
    shapes = statistic_shapes(tiny.module)
    good = {name: np.ones(shape, np.float32) for name, shape in shapes.items()}
    assert statistics_problem(_reply(good, {"num-examples": 10}), shapes, trained=10)[0] is None
    variance = next(name for name in shapes if name.endswith("running_var"))
    cases = {
        "not its training count": (_reply(good, {"num-examples": 100_000}), "the 10 of the site's training reply"),
        "huge": (_reply({**good, variance: good[variance] * 1e9}, {"num-examples": 10}), "beyond"),
        "half precision": (_reply({k: v.astype(np.float16) for k, v in good.items()}, {"num-examples": 10}), ""),
        "list count": (_reply(good, {"num-examples": [10]}), "only num-examples"),
        "no metrics": (RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in good.items()})}), "records"),
        "negative": (_reply({**good, variance: -good[variance]}, {"num-examples": 10}), "negative"),
        "nan": (_reply({**good, variance: good[variance] * np.nan}, {"num-examples": 10}), "NaN"),
        "extra array": (_reply({**good, "conv.weight": np.ones(3, np.float32)}, {"num-examples": 10}), "unexpected"),
        "wrong shape": (_reply({**good, variance: np.ones(7, np.float32)}, {"num-examples": 10}), "shape"),
        "more metrics": (_reply(good, {"num-examples": 10, "mean-label": 3.0}), "only num-examples"),
        "float count": (_reply(good, {"num-examples": 10.0}), "only num-examples"),
    }
    for name, (content, words) in cases.items():
        problem, usable = statistics_problem(content, shapes, trained=10)
        if name == "half precision":  # read as any float; the server pools in float64, casts to the model's
            assert problem is None and usable[variance].dtype == np.float16
            continue
        assert usable is None and words in problem, (name, problem)


def test_the_round_learning_rate_follows_a_cosine_over_the_rounds_or_stays():
    cosine = FederationSettings("m", "o", rounds=4, lr=0.01)
    rates = [cosine.round_lr(r) for r in range(1, 5)]
    assert rates[0] == 0.01 and all(a > b > 0 for a, b in zip(rates, rates[1:]))
    assert FederationSettings("m", "o", rounds=4, lr=0.01, round_schedule="constant").round_lr(4) == 0.01
    with pytest.raises(ConfigError, match="round_schedule"):
        FederationSettings("m", "o", round_schedule="linear")


def test_a_site_adapts_the_models_batchnorm_to_its_darker_images_and_nothing_else(tmp_path):
    """``federate adapt``: the checkpoint it writes holds the statistics measured on the site's training images
    (darkened digits, a camera that changed), every weight as it was; a model without BatchNorm is refused."""
    import torch
    from sklearn.datasets import load_digits

    from edgeopt.models.sources import save_checkpoint
    from tests.helpers import assert_one_line_error, edgeopt

    digits = load_digits()
    images = (np.repeat(digits.images[..., None], 3, -1) * 15).astype(np.uint8)
    dark = np.zeros((len(images), 32, 32, 3), np.uint8)
    dark[:, 12:20, 12:20] = images // 3  # darker, and smaller in the frame
    site = tmp_path / "site.npz"
    np.savez(site, x_train=dark[:1200], y_train=digits.target[:1200], x_test=dark[1200:], y_test=digits.target[1200:],
             classes=np.array([str(c) for c in range(10)]))
    model = load_model(TINY_SOURCE, input=TINY_INPUT)
    start = save_checkpoint(model, tmp_path / "global.safetensors")
    for out, problem in ((start, "the model itself"), (tmp_path, "is a folder")):
        assert_one_line_error(edgeopt("federate", "adapt", str(start), "--data", str(site), "--out", str(out)), problem)
    mine = tmp_path / "site" / "mine.safetensors"  # a folder that does not exist yet
    proc = edgeopt("federate", "adapt", str(start), "--data", str(site), "--out", str(mine))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"top1 on the test split: 0\.\d{4} before, 0\.\d{4} after", proc.stdout), proc.stdout
    adapted = load_model(str(mine))
    expected = measure(model, dark[:1200], 64)
    before, after = model.module.state_dict(), adapted.module.state_dict()
    for name in before:
        if name in expected:
            np.testing.assert_allclose(after[name].numpy(), expected[name], rtol=1e-5, atol=1e-6)
            assert not torch.allclose(after[name], before[name]), name
        elif before[name].is_floating_point():
            assert torch.equal(after[name], before[name]), name
    plain = load_model("edgeopt.models.zoo:mlp", input="1x512")
    save_checkpoint(plain, tmp_path / "plain.safetensors")
    refused = edgeopt("federate", "adapt", str(tmp_path / "plain.safetensors"), "--data", str(site),
                      "--out", str(tmp_path / "no.safetensors"))
    assert_one_line_error(refused, "no BatchNorm")
    assert not (tmp_path / "no.safetensors").exists()
