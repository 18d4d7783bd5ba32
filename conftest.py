"""Doctests of edgeopt's modules run as part of the suite, each in a fresh folder (its examples write files).

The Python API's examples train models (seconds each): they belong to the full suite, not the fast tier.
"""

import pytest


# The longest test files (they start servers, streams and exports; measured with --durations) run first:
# xdist hands each worker one file at a time, and a long file drawn last would keep one worker busy while
# the others sit idle. Within each group pytest-randomly's order stands. A stale entry only costs order.
LONG_FIRST = ("tests/serve/test_server.py", "tests/stream/test_stream.py", "tests/security/test_names_in_files.py",
              "tests/conformance/test_int8.py", "tests/agent/test_agent.py", "tests/serve/test_ladder.py")


def pytest_collection_modifyitems(items):  # after pytest-randomly's (tryfirst) shuffle, before -m deselects
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name.startswith("edgeopt.api."):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))  # stable: the shuffle holds within


@pytest.fixture(autouse=True)
def _doctests_run_in_a_fresh_folder(request, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
