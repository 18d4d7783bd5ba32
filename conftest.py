"""Doctests of edgeopt's modules run as part of the suite, each in a fresh folder (its examples write files).

The Python API's examples train models (seconds each): they belong to the full suite, not the fast tier.
"""

import pytest


# The longest test files (servers, streams, exports; measured per file) are handed out first. With
# `--dist loadfile --no-loadscope-reorder` (the Makefile) xdist gives each worker one file at a time in
# collection order, so a long file drawn last cannot keep one worker busy while the other sits idle.
# A stale entry costs only order.
LONG_FIRST = ("tests/security/test_names_in_files.py", "tests/serve/test_server.py", "tests/stream/test_stream.py",
              "tests/conformance/test_int8.py", "tests/agent/test_agent.py", "tests/serve/test_ladder.py",
              "tests/cli/test_plugin_task.py", "tests/conformance/test_backends.py", "tests/unit/test_judging.py")


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name.startswith("edgeopt.api."):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))  # stable: collection order within


@pytest.fixture(autouse=True)
def _doctests_run_in_a_fresh_folder(request, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
