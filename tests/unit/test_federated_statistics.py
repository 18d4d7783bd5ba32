"""The BatchNorm statistics a site measures for the server, and what the server accepts of them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the federated extra (flwr) is not installed")

from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict  # noqa: E402

from edgeopt.federated.settings import FederationSettings  # noqa: E402
from edgeopt.federated.statistics import measure, pool, statistic_shapes, statistics_problem  # noqa: E402
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

    first = next(name for name in one if name.endswith("running_mean"))
    together = measure(tiny, np.concatenate([dark, bright]), batch_size=128)  # one batch holding both sites
    pooled = pool([(one, 64), (two, 64)])
    variance = first.replace("running_mean", "running_var")
    np.testing.assert_allclose(pooled[first], together[first], rtol=1e-4, atol=1e-5)
    # the pooled variance counts how far the sites' means lie apart: above the mean of their variances
    assert np.all(pooled[variance] >= (one[variance] + two[variance]) / 2 - 1e-6)
    assert np.any(pooled[variance] > (one[variance] + two[variance]) / 2 + 1e-3)


def _reply(stats: dict, metrics: dict) -> RecordDict:
    return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in stats.items()}), "metrics": MetricRecord(metrics)})


def test_a_statistics_reply_is_exactly_the_models_statistics_and_a_count(tiny):
    shapes = statistic_shapes(tiny.module)
    good = {name: np.ones(shape, np.float32) for name, shape in shapes.items()}
    assert statistics_problem(_reply(good, {"num-examples": 10}), shapes)[0] is None
    variance = next(name for name in shapes if name.endswith("running_var"))
    cases = {
        "negative": (_reply({**good, variance: -good[variance]}, {"num-examples": 10}), "negative"),
        "nan": (_reply({**good, variance: good[variance] * np.nan}, {"num-examples": 10}), "NaN"),
        "extra array": (_reply({**good, "conv.weight": np.ones(3, np.float32)}, {"num-examples": 10}), "unexpected"),
        "wrong shape": (_reply({**good, variance: np.ones(7, np.float32)}, {"num-examples": 10}), "shape"),
        "more metrics": (_reply(good, {"num-examples": 10, "mean-label": 3.0}), "only num-examples"),
        "float count": (_reply(good, {"num-examples": 10.0}), "only num-examples"),
        "one image": (_reply(good, {"num-examples": 1}), "from 2"),
    }
    for name, (content, words) in cases.items():
        problem, usable = statistics_problem(content, shapes)
        assert usable is None and words in problem, (name, problem)


def test_the_round_learning_rate_follows_a_cosine_over_the_rounds_or_stays():
    cosine = FederationSettings("m", "o", rounds=4, lr=0.01)
    rates = [cosine.round_lr(r) for r in range(1, 5)]
    assert rates[0] == 0.01 and all(a > b > 0 for a, b in zip(rates, rates[1:]))
    assert FederationSettings("m", "o", rounds=4, lr=0.01, round_schedule="constant").round_lr(4) == 0.01
    with pytest.raises(Exception, match="round_schedule"):
        FederationSettings("m", "o", round_schedule="linear")
