"""The layers run one way (import-linter's contracts in pyproject.toml), and scripts use the library, never the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(__import__("sys").executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install 'edgeopt[dev]')")
    proc = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


def test_benchmarks_call_the_library_never_the_cli():
    for script in (ROOT / "benchmarks").glob("*.py"):
        text = script.read_text()
        assert not re.search(r"edgeopt\.cli|\"-m\", \"edgeopt\"|'-m', 'edgeopt'", text), script.name
