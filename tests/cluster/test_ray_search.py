"""A search on a real Ray cluster — a head and two worker nodes, each its own processes — on loopback only.

Ray advertises the machine's network address and listens on every interface (ray-project/ray#59110), so
these tests run only inside a network namespace that holds nothing but ``lo``: ``make test`` runs them so
(``unshare --net``, then ``ip link set lo up``); anywhere else they skip. What they hold to: a search on the
cluster chooses the recipe a local search chooses, with the same artifact bytes; a worker node killed while
it builds leaves the search to finish (the build is tried again on the other node); a search killed with
SIGKILL continues with ``--resume``. Each test checks at its end that no Ray process and no Ray file is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'edgeopt[ray]')")
if [name for _, name in socket.if_nameindex()] != ["lo"]:
    pytest.skip("Ray cluster tests run only in a network namespace holding only the loopback interface: "
                "`make test` runs them so (unshare --net)", allow_module_level=True)

from edgeopt.backends import get_backend  # noqa: E402
from edgeopt.core.artifact import Artifact  # noqa: E402
from tests.helpers import edgeopt  # noqa: E402

# a microcontroller's search: every candidate one TFLM artifact, its latency estimated from MACs and its
# memory measured by TFLM, so the choice hangs on nothing a busy machine's timing could change
MCU_SEARCH = ("--data", "digits", "--device", "nano33-ble", "--max-accuracy-drop", "5", "--resolutions", "none",
              "--students", "none", "--no-qat", "--budget", "10m")
OBJECT_STORE = 256 << 20  # per node: a test node's default 150 MiB would spill the builds' files to disk
RAY_PROCESSES = ("raylet", "gcs_server", "ray::")  # any of a node's processes, or a worker


@pytest.fixture(scope="module", autouse=True)
def needs_tflm():
    reason = get_backend("tflm").unavailable_reason()
    if reason:
        pytest.skip(f"tflm: {reason}")


@pytest.fixture
def cluster(monkeypatch):
    """A head that offers no CPUs (the search times candidates on its node) and two 1-CPU worker nodes; Ray's
    files under a temporary folder, its token under a temporary HOME; afterwards nothing of Ray remains."""
    from ray.cluster_utils import Cluster

    home_ray = Path.home() / ".ray"
    had_home_ray, had_tmp_ray = home_ray.exists(), Path("/tmp/ray").exists()
    scratch = Path(tempfile.mkdtemp(prefix="eo-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    monkeypatch.setenv("RAY_TMPDIR", str(scratch))
    monkeypatch.setenv("HOME", str(scratch / "home"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray_cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                                "object_store_memory": OBJECT_STORE})
    workers = [ray_cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE)
               for _ in range(2)]
    ray_cluster.wait_for_nodes()
    try:
        yield ray_cluster, workers
    finally:
        ray_cluster.shutdown()
        left = _ray_processes(scratch)
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"
        assert not scratch.exists() and home_ray.exists() == had_home_ray and Path("/tmp/ray").exists() == had_tmp_ray


def _ray_processes(scratch: Path, wait_s: float = 20.0) -> list[str]:
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for process in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                text = " ".join(process.info["cmdline"] or []) + " " + (process.info["name"] or "")
            except psutil.Error:
                continue
            if process.pid != os.getpid() and (str(scratch) in text or any(p in text for p in RAY_PROCESSES)):
                left.append(f"{process.pid} {text[:120]}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _search(model: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = edgeopt("optimize", str(model), "--out", str(out), *MCU_SEARCH, *args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "results.json").read_text())


def _model_files(folder: Path) -> dict[str, str]:
    return {name: entry["sha256"] for name, entry in Artifact.open(folder).manifest["files"].items()}


def test_a_search_on_the_cluster_chooses_what_a_local_search_does_with_the_same_artifact_bytes(trained, tmp_path,
                                                                                                cluster):
    ray_cluster, _ = cluster
    _, local = _search(trained[0], tmp_path / "local", "--prune-ratios", "0.5", "--epochs", "2")
    proc, remote = _search(trained[0], tmp_path / "ray", "--prune-ratios", "0.5", "--epochs", "2",
                           "--cluster", ray_cluster.address)
    assert remote["chosen"]["recipe"] == local["chosen"]["recipe"]
    assert (tmp_path / "ray" / "best.toml").read_text() == (tmp_path / "local" / "best.toml").read_text()
    assert _model_files(tmp_path / "ray" / "best") == _model_files(tmp_path / "local" / "best")
    built = remote["device"]["built_by"]
    assert built["name"] == "ray" and built["built_on"] and built["timed_on"] == "127.0.0.1"
    assert all(r["built_on"] for r in remote["candidates"] if r["status"] == "ok")
    assert not any(r.get("built_on") for r in local["candidates"])
    assert "Built on the Ray cluster" in " ".join(proc.stdout.split())


def _wait_for_probes(journal: Path, count: int, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the search ended before its stage 2 started"
        if journal.is_file() and journal.read_text().count('"kind": "probe"') >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {count} probes in the journal after {timeout_s} s")


def _building_on(node) -> bool:
    """Whether a worker process of ``node`` is running a build now (Ray titles it with the task's name)."""
    import psutil

    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    for child in raylet.children(recursive=True):
        try:
            if "_build_on_node" in " ".join(child.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


def _start_search(model: Path, out: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeopt", "optimize", str(model), "--out", str(out), *MCU_SEARCH,
                             "--prune-ratios", "0.25,0.5", "--epochs", "12", "--cluster", address],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_worker_node_killed_while_it_builds_leaves_the_search_to_finish_on_the_other(trained, tmp_path, cluster):
    ray_cluster, (first, second) = cluster
    out = tmp_path / "search"
    process = _start_search(trained[0], out, ray_cluster.address)
    _wait_for_probes(out / "journal.jsonl", 2, process)  # both fine-tunes submitted: one on each worker node
    deadline = time.monotonic() + 120
    while not (_building_on(first) and _building_on(second)):
        assert time.monotonic() < deadline and process.poll() is None, "the two builds never ran side by side"
        time.sleep(0.2)
    ray_cluster.remove_node(first, allow_graceful=False)  # its raylet and its workers killed mid-build: node lost
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    results = json.loads((out / "results.json").read_text())
    stage2 = [r for r in results["candidates"] if r["stage"] == 2]
    assert len(stage2) == 2 and all(r["status"] == "ok" for r in stage2), stage2
    survivor = second.node_id[:8]
    assert all(survivor in r["built_on"] for r in stage2), [r["built_on"] for r in stage2]


def test_a_search_killed_on_the_cluster_resumes_without_rebuilding_what_it_finished(trained, tmp_path, cluster):
    ray_cluster, _ = cluster
    out = tmp_path / "search"
    process = _start_search(trained[0], out, ray_cluster.address)
    _wait_for_probes(out / "journal.jsonl", 1, process)
    os.killpg(process.pid, signal.SIGKILL)  # no clean-up runs; its builds on the cluster die with their owner
    process.communicate()
    before = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    finished = {r["key"] for r in before if r.get("status") == "ok"}
    assert finished and not any(r.get("stage") == 2 and r.get("status") == "ok" for r in before)
    proc, results = _search(trained[0], out, "--prune-ratios", "0.25,0.5", "--epochs", "12", "--resume",
                            "--cluster", ray_cluster.address)
    after = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    rebuilt = [r["key"] for r in after[len(before):] if r.get("key") in finished]
    assert not rebuilt, f"finished candidates built again: {rebuilt}"
    stage2 = [r for r in results["candidates"] if r["stage"] == 2]
    assert len(stage2) == 2 and all(r["status"] == "ok" for r in stage2)
    assert results["chosen"] is not None
