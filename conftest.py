"""Doctests of edgeopt's modules run as part of the suite, each in a fresh folder (its examples write files).

The Python API's examples train models (seconds each): they belong to the full suite, not the fast tier.
"""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name.startswith("edgeopt.api."):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _doctests_run_in_a_fresh_folder(request, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
