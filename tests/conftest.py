"""Shared fixtures: the tiny conformance model and a per-session cache of its artifacts."""

from __future__ import annotations

import pytest

from edgeopt.backends import all_backends
from edgeopt.export import export, unsupported_reason
from edgeopt.models import LoadedModel, load_model

TINY_SOURCE = "edgeopt.zoo:tiny_cnn"
TINY_INPUT = "1x3x32x32"


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return load_model(TINY_SOURCE, input=TINY_INPUT)


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory, tiny_model):
    """Export the tiny model once per backend per test session (compiles cost seconds)."""
    root = tmp_path_factory.mktemp("artifacts")
    cache: dict[str, object] = {}

    def get(backend: str):
        if backend not in cache:
            cache[backend] = export(tiny_model, backend, root / backend)
        return cache[backend]

    return get


def backend_params():
    """One pytest param per registered backend, skipped with its reason when unavailable."""
    params = []
    probe = load_model(TINY_SOURCE, input=TINY_INPUT)
    for backend in all_backends():
        reason = unsupported_reason(backend, probe, "fp32")
        marks = [pytest.mark.skip(reason=f"{backend.name} unavailable here: {reason}")] if reason else []
        params.append(pytest.param(backend.name, marks=marks, id=backend.name))
    return params

