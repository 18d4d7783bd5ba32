"""A search's candidates on a Ray cluster: overhead per candidate, moving a model, one worker against two.

    .venv/bin/python benchmarks/cluster.py          # about 25 minutes on 2 cores

The same NEU search three times, each what this command line runs (``edgeopt.optimize`` with the same
settings; the search pinned to one core while it runs, so it trains and times with one thread and every
build declares one CPU):

    edgeopt optimize runs/neu-resnet18.safetensors --data ../shared/datasets/neu_cls_64.npz \\
        --backends onnxruntime --prune-ratios 0.25,0.5 --resolutions none --students none --no-qat \\
        --max-accuracy-drop 1 --budget 60m --out runs/cluster/<arm> [--cluster ADDRESS]

- **local**: no cluster (today's search);
- **ray, 1 worker**: a Ray head offering no CPUs (the search's node, where candidates are timed) and one
  single-CPU worker node, separate processes; every build is waited for, so the time around it is the
  cluster's overhead: scheduling, the worker's data and model load, the cached models sent and the
  candidate's folder returned, unpacking;
- **ray, 2 workers**: the same with two single-CPU worker nodes: two builds at once.

Also: the time to move the ResNet-18 checkpoint to a worker and back (a task that returns what it gets,
against an empty one), and the expected wall time with N worker nodes *computed* from the 1-worker
run's measured parts (the search's own serial work plus each stage's builds spread over N), not measured.

Ray advertises the machine's address and listens on every interface: the script runs itself inside a
network namespace that holds only loopback (``unshare --net``, as root). All of it runs on this
machine's 2 cores: the worker nodes and the search share them, so a latency timed during another build
is noisier than on a reserved node (the choice is compared across arms below).
Results: benchmarks/results/cluster.json and the marked section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

import edgeopt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- cluster:start -->", "<!-- cluster:end -->"
BASELINE = ROOT / "runs" / "neu-resnet18.safetensors"  # trained by benchmarks/compression.py or tinyml.py
TRAIN = {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.05, "schedule": "onecycle"}  # as tinyml.py
# the NEU search of benchmarks/optimize_neu.py (15 epochs a fine-tune, at most 1 point lost), on one runtime and
# two pruning widths so that three runs of it fit in half an hour
SEARCH = ("--backends", "onnxruntime", "--prune-ratios", "0.25,0.5", "--resolutions", "none", "--students", "none",
          "--no-qat", "--max-accuracy-drop", "1", "--budget", "60m")  # as a command line (the report's wording)
SPACE = edgeopt.SearchSpace(backends=("onnxruntime",), prune_ratios=(0.25, 0.5), resolutions=(), students=(), qat=False)
GOALS = edgeopt.Goals(max_drop=1.0)
OBJECT_STORE = 1 << 30  # per node (ray.cluster_utils gives a test node 150 MiB, which spills a model to disk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "cluster")
    args = parser.parse_args()
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return _in_loopback_namespace()
    data = args.datasets_dir / "neu_cls_64.npz"
    if not data.is_file():
        print(f"NEU-CLS is not at {data}; pass --datasets-dir", file=sys.stderr)
        return 2
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if not BASELINE.is_file():
        print("training the NEU ResNet-18 baseline (30 epochs, as tinyml.py)", flush=True)
        edgeopt.train(str(data), "torchvision:resnet18", BASELINE, 30, **TRAIN, resume=True, threads=2)
    arms = {"local": search(args.runs / "local", data, workers=0)}
    for workers in (1, 2):
        arms[f"ray-{workers}"] = search(args.runs / f"ray-{workers}", data, workers=workers)
    moving = move_a_model()
    results = {"arms": arms, "moving": moving, "scaling": expected_scaling(arms["ray-1"], (1, 2, 4, 8))}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(START, END, markdown(results), title="A search on a Ray cluster (`benchmarks/cluster.py`)")
    print(markdown(results))
    return 0


def _in_loopback_namespace() -> int:
    """Run this script again inside a network namespace holding only ``lo`` (Ray listens on every interface)."""
    command = " ".join([f"'{sys.executable}'", f"'{Path(__file__).resolve()}'", *[f"'{a}'" for a in sys.argv[1:]]])
    try:
        return subprocess.call(["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {command}"])
    except FileNotFoundError:
        print("unshare is missing: run this benchmark as root on Linux (util-linux)", file=sys.stderr)
        return 2


def search(out: Path, data: Path, workers: int) -> dict:
    """One arm: the search (this process pinned to one core while it runs) on a fresh cluster of ``workers`` nodes
    (0: none), whose processes are started before the pinning and so use every core."""
    from edgeopt.report.console import make_console
    from edgeopt.report.progress import SearchPrinter

    cluster = start_cluster(workers) if workers else None
    everything = os.sched_getaffinity(0)
    print(f"== {out.name}" + (f": {workers} worker node(s) at {cluster.address}" if cluster else ": no cluster"),
          flush=True)
    started = time.monotonic()
    os.sched_setaffinity(0, {min(everything)})  # one thread: the search trains and times on one core
    try:
        edgeopt.optimize(str(BASELINE), str(data), out, goals=GOALS, space=SPACE, budget="60m", force=True,
                         cluster=edgeopt.ClusterConfig(cluster.address) if cluster else None,
                         on_event=SearchPrinter(make_console()))
    finally:
        os.sched_setaffinity(0, everything)
        if cluster is not None:
            cluster.shutdown()
    wall = time.monotonic() - started
    return summarize(out, json.loads((out / "results.json").read_text()), wall)


def start_cluster(workers: int):
    """A Ray head offering no CPUs (the search's node) and ``workers`` single-CPU worker nodes, each its processes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                            "object_store_memory": OBJECT_STORE})
    for _ in range(workers):
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE)
    cluster.wait_for_nodes()
    return cluster


def summarize(out: Path, results: dict, wall: float) -> dict:
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    first_stage2 = next(i for i, r in enumerate(journal) if r.get("kind") == "probe" or r.get("stage") == 2)
    stage1_end = max(r.get("finished_at_s") or 0 for r in journal[:first_stage2])
    stage2_end = max((r.get("finished_at_s") or 0 for r in journal if r.get("stage") == 2), default=stage1_end)
    candidates = results["candidates"]
    chosen = results["chosen"]
    best = json.loads((out / "best" / "manifest.json").read_text())
    built = results["device"]["built_by"]
    return {
        "wall_s": wall, "search_s": results["elapsed_s"], "stage2_s": stage2_end - stage1_end,
        "chosen": chosen["label"], "chosen_latency_ms": chosen["measurement"]["latency_ms"],
        "chosen_value": chosen["measurement"]["metrics"][chosen["metric"]],
        "best_files": {name: entry["sha256"] for name, entry in best["files"].items()},
        "candidates": [{"label": r["label"], "stage": r["stage"], "status": r["status"], "elapsed_s": r["elapsed_s"],
                        "built_on": r.get("built_on")} for r in candidates],
        "probes_s": sum(r.get("elapsed_s", 0) for r in journal if r.get("kind") == "probe"),
        "built_by": built,
    }


def move_a_model() -> dict:
    """Seconds to send the baseline checkpoint to a worker and have it sent back, less an empty task's."""
    import ray

    cluster = start_cluster(1)
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        echo = ray.remote(num_cpus=1)(_echo)
        payload = BASELINE.read_bytes()
        ray.get(echo.remote(b""))  # the worker process starts once
        empty = [_timed(lambda: ray.get(echo.remote(b""))) for _ in range(5)]
        full = [_timed(lambda: len(ray.get(echo.remote(payload)))) for _ in range(5)]
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"mb": len(payload) / 2**20, "empty_s": statistics.median(empty), "round_trip_s": statistics.median(full),
            "moving_s": statistics.median(full) - statistics.median(empty)}


def _echo(data: bytes) -> bytes:
    return bytes(data)


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def expected_scaling(arm: dict, nodes: tuple[int, ...]) -> dict:
    """The wall time with N single-CPU worker nodes, computed from the 1-worker run: its serial part (the
    search's own work: set-up, judging, timing, probes, and each build's overhead) plus each stage's build
    times spread over N nodes (longest first). A computation from measured parts, not a measurement."""
    builds = arm["built_by"]["builds"]
    stage_of = {c["label"]: c["stage"] for c in arm["candidates"]}
    build_total = sum(b["build_s"] for b in builds)
    serial = arm["search_s"] - build_total
    expected = {}
    for n in nodes:
        spans = 0.0
        for stage in (1, 2):
            times = sorted((b["build_s"] for b in builds if stage_of.get(b["label"]) == stage), reverse=True)
            loads = [0.0] * n
            for t in times:
                loads[loads.index(min(loads))] += t
            spans += max(loads) if times else 0.0
        expected[n] = serial + spans
    return {"serial_s": serial, "build_s": build_total, "expected_s": expected}


def markdown(results: dict) -> str:
    from edgeopt.measure.environment import collect as collect_environment
    from edgeopt.report.console import environment_line

    arms, moving, scaling = results["arms"], results["moving"], results["scaling"]
    local = arms["local"]
    stage2_local = [c["elapsed_s"] for c in local["candidates"] if c["stage"] == 2 and c["status"] == "ok"]
    median_stage2 = statistics.median(stage2_local) if stage2_local else float("nan")
    overheads = [b["overhead_s"] for b in arms["ray-1"]["built_by"]["builds"] if b["overhead_s"] is not None]
    overhead = statistics.median(overheads) if overheads else float("nan")
    mean = statistics.mean(overheads) if overheads else float("nan")
    lines = [f"Measured {dt.date.today().isoformat()} on {environment_line(collect_environment())}. "
             "Reproduce: `.venv/bin/python benchmarks/cluster.py`. NEU-CLS-64, the ResNet-18 baseline; search: "
             f"`{' '.join(SEARCH)}`, pinned to one core (one thread; each build declares one CPU). The Ray head "
             "offers no CPUs (candidates are timed there); worker nodes have one CPU each; all on this machine's "
             "2 cores, in a network namespace holding only loopback.", "",
             "| arm | search wall | stage 2 wall | candidates built | chosen | its p50 ms | top-1 | best artifact's files |",
             "|---|---|---|---|---|---|---|---|"]
    reference = local["best_files"]
    for name, arm in arms.items():
        same = "same bytes as local" if arm["best_files"] == reference else "DIFFERENT bytes"
        built = sum(1 for c in arm["candidates"] if c["status"] == "ok")
        lines.append(f"| {name} | {arm['search_s'] / 60:.1f} min | {arm['stage2_s'] / 60:.1f} min | {built} | "
                     f"{arm['chosen']} | {arm['chosen_latency_ms']:.2f} | {100 * arm['chosen_value']:.2f}% | {same} |")
    lines += ["", f"Overhead per candidate (1 worker, every build waited for: the time around the build on the "
                  f"worker): median {overhead:.2f} s over {len(overheads)} builds (max {max(overheads, default=0):.2f} s, "
                  "the first, which starts the worker process and loads the data and model; mean with it "
                  f"{mean:.2f} s); the median stage-2 candidate takes {median_stage2:.1f} s locally: "
                  f"**{100 * overhead / median_stage2:.1f}%** (goal: at most 2%; the mean, "
                  f"{100 * mean / median_stage2:.1f}%).",
              f"Moving the ResNet-18 checkpoint ({moving['mb']:.1f} MB) to a worker and back: "
              f"{moving['moving_s']:.3f} s (round trip {moving['round_trip_s']:.3f} s, an empty task "
              f"{moving['empty_s'] * 1000:.1f} ms).",
              f"Stage 2 with two single-CPU workers against one: {arms['ray-2']['stage2_s'] / 60:.1f} against "
              f"{arms['ray-1']['stage2_s'] / 60:.1f} min ({arms['ray-1']['stage2_s'] / arms['ray-2']['stage2_s']:.2f}x).",
              "", "Expected search wall time with N single-CPU worker nodes, **computed** (not measured) from the "
                  f"1-worker run: its serial part {scaling['serial_s'] / 60:.1f} min (set-up, judging and timing "
                  f"every candidate, probes, overheads) plus each stage's builds ({scaling['build_s'] / 60:.1f} min in "
                  "all) spread over N nodes, longest first: " +
              ", ".join(f"N={n}: {s / 60:.1f} min" for n, s in scaling["expected_s"].items()) +
              f" (measured with 2: {arms['ray-2']['search_s'] / 60:.1f} min). Beyond the number of candidates in a "
              "stage, more nodes add nothing."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
