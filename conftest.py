"""Doctests of edgeopt's modules run as part of the suite, each in a fresh folder (its examples write files).

The Python API's examples train models (seconds each): they belong to the full suite, not the fast tier.
"""

import pytest


# The longest test files (measured per file with --durations on two cores, 2026-12-04), longest first. With
# `--dist loadfile --no-loadscope-reorder` (the Makefile) xdist gives each worker one file at a time in collection
# order, so a long file drawn last cannot keep one worker busy while the other sits idle. The detector's files lead
# (the first trains the detector the others share), the docs' commands go beside them. A stale entry costs only order.
LONG_FIRST = ("tests/cli/test_detection_cli.py", "tests/cli/test_docs_commands.py", "tests/realdata/test_same_answers.py",
              "tests/federated/test_federation.py",
              "tests/security/test_kill9.py", "tests/agent/test_farm.py", "tests/stream/test_stream.py",
              "tests/cli/test_optimize.py",
              "tests/cli/test_search_budget.py", "tests/agent/test_agent.py", "tests/realdata/test_compression_real.py",
              "tests/security/test_names_in_files.py", "tests/serve/test_server.py", "tests/conformance/test_int8.py",
              "tests/serve/test_ladder.py", "tests/cli/test_plugin_task.py", "tests/conformance/test_backends.py",
              "tests/unit/test_judging.py")


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name.startswith("edgeopt.api."):
            item.add_marker(pytest.mark.slow)
    rank = {path: index for index, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_FIRST)))  # stable: in-file order kept


@pytest.fixture(autouse=True)
def _doctests_run_in_a_fresh_folder(request, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
