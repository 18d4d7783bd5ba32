"""Passes declare what a search tries of them (``Pass.search_steps``); the space names no pass.

The built-in passes' offers, and a pass from outside edgeopt (``tests/plugins/searchable_pass.py``)
that joins stage 2 once registered, without any edit to ``edgeopt/search/space.py``.
"""

from __future__ import annotations

import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.passes import SearchRequest, get_pass, register_pass
from edgeopt.passes.base import FIRST, LAST
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.search.space import SearchSpace, fine_tune_candidates, model_steps

SPACE = SearchSpace(prune_ratios=(0.75, 0.5), resolutions=(0.75,), students=("torchvision:mobilenet_v2",), epochs=2)
BASE, EXPORT = Recipe("m.safetensors", "d"), ExportConfig("onnxruntime")


@pytest.fixture
def searchable():
    """The plugin pass, registered as a user's module would, and taken out again afterwards."""
    from edgeopt.passes import _registry
    from tests.plugins.searchable_pass import PASS

    register_pass(PASS)
    try:
        yield PASS
    finally:
        _registry().pop(PASS.name, None)


def _labels(priority: str, space: SearchSpace = SPACE, qat_backends: tuple[str, ...] = ("openvino",)) -> list[str]:
    recipes = fine_tune_candidates(space, BASE, priority, [EXPORT], 64, list(qat_backends))
    return [recipe.steps[0].label for recipe in recipes]


def test_each_built_in_pass_offers_its_own_values_in_the_priority_s_order():
    request = SearchRequest(SPACE, "memory", 64, ("torchvision:mobilenet_v2",))
    prune = get_pass("prune").search_steps(request)
    assert [(s.config.ratio, s.config.fine_tune.epochs) for s in prune] == [(0.75, 2), (0.5, 2)]  # strongest first
    distill = get_pass("distill").search_steps(request)
    assert [(s.config.input_size, s.config.student) for s in distill] == [(48, None), (None, "torchvision:mobilenet_v2")]
    assert get_pass("qat").search_steps(request) == []  # memory first: no QAT
    qat = get_pass("qat").search_steps(SearchRequest(SPACE, "accuracy", 64))
    assert [(s.order, s.config.fine_tune.epochs) for s in qat] == [(FIRST, SPACE.qat_epochs)]
    assert get_pass("qat").search_steps(SearchRequest(SPACE, "latency", 64))[0].order == LAST
    assert get_pass("finetune").search_steps(request) == [] == get_pass("sparsify").search_steps(request)


def test_the_stage_two_order_is_the_guide_s():
    assert _labels("latency") == ["prune 0.5 (2 ep)", "prune 0.75 (2 ep)", "distil→same arch @48px (2 ep)",
                                  "distil→mobilenet_v2 (2 ep)", "QAT (3 ep)"]
    assert _labels("accuracy") == ["QAT (3 ep)", "prune 0.5 (2 ep)", "distil→mobilenet_v2 (2 ep)",
                                   "distil→same arch @48px (2 ep)", "prune 0.75 (2 ep)"]
    assert _labels("memory") == ["prune 0.75 (2 ep)", "prune 0.5 (2 ep)", "distil→mobilenet_v2 (2 ep)",
                                 "distil→same arch @48px (2 ep)"]
    assert "QAT (3 ep)" not in _labels("latency", qat_backends=())  # no runtime converts fake-quantizers


def test_a_registered_plugin_pass_joins_stage_two_in_the_order_it_declares(searchable):
    extra = Step.of("sparsify", amount=0.5, fine_tune={"epochs": 1})
    space = SearchSpace(prune_ratios=(0.5,), resolutions=(), students=(), epochs=2, steps=(extra,))
    assert _labels("latency", space) == ["round weights to float16", "prune 0.5 (2 ep)", "round weights to bfloat16",
                                         "sparsify 0.5 (1 ep)", "QAT (3 ep)"]
    assert "round weights" not in " ".join(_labels("accuracy", space))  # it offers nothing when accuracy comes first
    recipe = fine_tune_candidates(space, BASE, "memory", [EXPORT], 64, [])[0]
    assert recipe.steps[0].module == "tests.plugins.searchable_pass"  # the recipe records where the pass lives
    assert recipe.steps[0].to_dict() == {"kind": "round_weights", "module": "tests.plugins.searchable_pass",
                                         "dtype": "float16"}


def test_an_unregistered_plugin_pass_is_not_searched():
    assert not any(step.kind == "round_weights" for step, _ in model_steps(SPACE, "latency", 64))


def test_a_step_takes_only_its_own_pass_s_config():
    with pytest.raises(ConfigError, match="takes a PruneConfig"):
        Step.using(get_pass("prune"), get_pass("qat").config())
