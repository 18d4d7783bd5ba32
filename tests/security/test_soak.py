"""The soak benchmark, half a minute of it (the 10-minute run's figures are in benchmarks/RESULTS.md): the
server and a stream under mixed load, swaps and bad requests answer no 500, lose no connection, and
refuse every tampered version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_half_a_minute_of_soak_serves_everything_and_refuses_what_it_must(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "0.5", "--no-write",
                           "--work", str(tmp_path / "soak")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "soak: ok" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(proc.stdout[proc.stdout.index("\n{\n"):proc.stdout.rindex("\n}") + 2])  # the figures block
    assert figures["requests"] > 1000 and figures["server_errors"] == 0 and figures["transport_errors"] == 0
    assert {400, 401, 413} <= {int(code) for code in figures["statuses"]}  # the bad requests were sent, and refused
    assert figures["refused_counted"] >= figures["tampered_swaps"] >= 1
    assert figures["stream"]["processed"] + figures["stream"]["skipped"] == figures["stream"]["received"]
