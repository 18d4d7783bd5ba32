"""How wrong is a latency estimate, before and after correcting it with measurements from the device?

The device is emulated here: ``edgeopt agent`` in its own torch-free venv (ONNX Runtime and
OpenVINO only), pinned to one core with ``taskset`` and capped at 1 GB of resident memory
by the agent's watchdog. Two such devices are measured: **one core** of this CPU, and
**one core at half speed** (a CFS bandwidth limit of 0.5 CPU in 2 ms periods, where the
cgroup v1 cpu controller is writable): a board that delivers less than its nominal peak,
as small ARM boards do, which the roofline cannot see. For each of 14 artifacts (random-init
torchvision models: latency does not depend on trained weights) this script

1. times it here, with every CPU, as ``optimize`` does without an agent;
2. estimates its latency on the device with the roofline model (``devices.estimate_ms``,
   the device's CPU as its agent detected it);
3. has the agent measure it on the device (its outputs checked against this machine's).

Then it files the first five measurements (a fixed, seeded choice) in a measurement store,
corrects the other artifacts' estimates with what they fit (``devices.calibration``), and
prints the estimator's median absolute error on those held-out artifacts before and after,
with how often the interval holds the measured value.

A second part (``--part search``) runs ``edgeopt optimize --agent`` on the one-core device with
the NEU-CLS ResNet-18 of ``benchmarks/compression.py`` (runtimes and INT8 only, no fine-tuning)
and writes the candidates ranked on the device and here, side by side.

    python benchmarks/agent.py                  # both parts, ~6 min (the lean venv, once: ~1 min more)
    python benchmarks/agent.py --part search    # only the search on the device
    python benchmarks/agent.py --part farm      # a farm of both devices timing one search at once (~8 min)

A third part (``--part farm``) starts both devices at once (core 0, and core 1 at half speed) as a farm
of ``optimize``: every candidate timed on both concurrently; the search runs unbounded, then again with a
latency bound halfway between the two devices' figures for its most accurate candidate, and reports each
device's own choice under that bound.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import secrets
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from loopback import free_port  # benchmarks/loopback.py
from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

from edgeopt import TimingConfig, load_model
from edgeopt.agent.client import AgentClient
from edgeopt.agent.identity import label, profile_of
from edgeopt.agent.remote import measure_on_device
from edgeopt.core.artifact import Artifact
from edgeopt.compile import export
from edgeopt.devices import estimate_ms, host_profile
from edgeopt.devices.calibration import MeasurementStore, Observation
from edgeopt.measure import environment
from edgeopt.measure.process import MeasureConfig, time_artifact
from edgeopt.measure.profile import count_flops_and_params

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- agent:start -->", "<!-- agent:end -->"
SEARCH_START, SEARCH_END = "<!-- agent-search:start -->", "<!-- agent-search:end -->"
FARM_START, FARM_END = "<!-- agent-farm:start -->", "<!-- agent-farm:end -->"
NEU_BASELINE = ROOT / "runs" / "neu-resnet18.safetensors"  # trained by benchmarks/compression.py --datasets neu
ARTIFACTS = [  # (model source, backend, precision): a spread of sizes, two runtimes, two precisions
    ("torchvision:resnet18", "onnxruntime", "fp32"), ("torchvision:resnet18", "onnxruntime", "int8"),
    ("torchvision:resnet18", "openvino", "fp32"), ("torchvision:resnet18", "openvino", "int8"),
    ("torchvision:mobilenet_v2", "onnxruntime", "fp32"), ("torchvision:mobilenet_v2", "onnxruntime", "int8"),
    ("torchvision:mobilenet_v2", "openvino", "fp32"), ("torchvision:mobilenet_v3_small", "onnxruntime", "fp32"),
    ("torchvision:mobilenet_v3_small", "openvino", "fp32"), ("torchvision:squeezenet1_1", "onnxruntime", "fp32"),
    ("torchvision:shufflenet_v2_x1_0", "onnxruntime", "fp32"), ("torchvision:efficientnet_b0", "onnxruntime", "fp32"),
    ("torchvision:efficientnet_b0", "openvino", "fp32"), ("torchvision:resnet50", "onnxruntime", "fp32"),
]
TIMING = TimingConfig(warmup=5, min_iters=20, min_seconds=1.0)
TRAIN = 5
# The device's process: the agent's library entry point, run by the device's own (torch-free) Python.
DEVICE_MAIN = """
import json, os, sys
from pathlib import Path
from edgeopt.agent import AgentSettings, serve_agent
a = json.loads(sys.argv[1])
serve_agent(AgentSettings(token=os.environ["EDGEOPT_AGENT_TOKEN"], store=Path(a["store"]), name=a["kind"],
                          kind=a["kind"], memory_cap_mb=a["cap"]), port=a["port"])
"""
CGROUP = Path("/sys/fs/cgroup/cpu/edgeopt-bench-device")
DEVICES = {  # kind -> CPU bandwidth (None: the whole core)
    "emulated-1core": None,
    "emulated-1core-half-speed": 0.5,
}


def lean_python(venv: Path) -> str:
    """The emulated device's Python: a venv with edgeopt's edge install and no torch (made once)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the device's torch-free venv in {venv} (about a minute)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"{ROOT}[edge-onnxruntime,edge-openvino]"], check=True)
    else:  # the same edgeopt as this checkout
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)],
                       check=True)
    return str(python)


def half_speed_cgroup(share: float) -> str | None:
    """A cgroup v1 cpu group limited to ``share`` of one CPU in 2 ms periods (the kernel's smallest quota is
    1 ms); None (with the reason printed) where this machine does not allow it."""
    try:
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "cpu.cfs_period_us").write_text("2000")
        (CGROUP / "cpu.cfs_quota_us").write_text(str(int(2000 * share)))
    except OSError as exc:
        print(f"  cannot limit CPU bandwidth here ({exc}): the half-speed device is skipped", flush=True)
        return None
    return str(CGROUP / "cgroup.procs")


def start_device(python: str, store: Path, port: int, token: str, core: int, cap_mb: float, kind: str,
                 share: float | None) -> subprocess.Popen | None:
    """The agent pinned to one core with a memory cap (and a CPU bandwidth limit): the emulated small device."""
    settings = json.dumps({"port": port, "store": str(store), "kind": kind, "cap": cap_mb})
    command = ["taskset", "-c", str(core), python, "-c", DEVICE_MAIN, settings]
    if share is not None:
        procs = half_speed_cgroup(share)
        if procs is None:
            return None
        command = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *command]  # the agent and its workers join it
    agent = subprocess.Popen(command, env={**os.environ, "EDGEOPT_AGENT_TOKEN": token}, stderr=subprocess.PIPE, text=True)
    client = AgentClient(f"http://127.0.0.1:{port}", token, retries=8, backoff_s=0.25)
    client.identity()  # waits (with backoff) until it answers
    return agent


def build(work: Path) -> list[dict]:
    """Each artifact of ARTIFACTS (kept between runs) with its MACs."""
    built = []
    for source, backend, precision in ARTIFACTS:
        folder = work / f"{source.split(':')[1]}-{backend}-{precision}"
        model = load_model(source, input="1x3x224x224")
        macs = count_flops_and_params(model)["macs"]
        if not (folder / "manifest.json").is_file():
            calibration = model.input_spec.example(batch=32) if precision == "int8" else None
            # untrained weights: only the latency counts, so parity is recorded, not enforced
            export(model, backend, folder, precision=precision, calibration=calibration, overwrite=True, verify=False)
        built.append({"name": folder.name, "path": folder, "macs": macs})
        print(f"  built {folder.name}", flush=True)
    return built


def measure(artifacts: list[dict], client: AgentClient, device, host, threads: int) -> list[dict]:
    rows = []
    for item in artifacts:
        artifact = Artifact.open(item["path"])
        here = time_artifact(artifact.path, MeasureConfig(threads=threads, timing=TIMING))["batches"]["1"]["p50"]
        remote = measure_on_device(client, artifact.path, MeasureConfig(timing=TIMING))
        measured = remote["timing"]["batches"]["1"]["p50"]
        roofline = estimate_ms(here, device, host, artifact.precision, item["macs"], artifact.size_bytes, threads)
        rows.append({"name": item["name"], "backend": artifact.backend, "precision": artifact.precision,
                     "macs": item["macs"], "size_bytes": artifact.size_bytes, "here_ms": here, "roofline_ms": roofline,
                     "measured_ms": measured, "peak_rss_mb": remote["timing"]["batches"]["1"]["peak_rss_mb"],
                     "load_ms": remote["timing"]["load_ms"], "parity": remote["parity"]["passed"]})
        print(f"  {item['name']:40s} here {here:8.2f} ms · roofline {roofline:8.2f} ms · device {measured:8.2f} ms",
              flush=True)
    return rows


def correct(rows: list[dict], store_root: Path, kind: str, seed: int = 0) -> list[dict]:
    """File TRAIN measurements (seeded choice) in a fresh store; correct and judge the others' estimates."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    store = MeasurementStore(store_root)
    for index in order[:TRAIN]:
        row = rows[index]
        row["role"] = "fitted"
        store.add(Observation(kind, row["backend"], row["precision"], estimate_ms=row["roofline_ms"],
                              measured_ms=row["measured_ms"], host_ms=row["here_ms"], macs=row["macs"],
                              size_bytes=row["size_bytes"]))
    for index in order[TRAIN:]:
        row = rows[index]
        correction = store.correction(kind, row["backend"], row["precision"])
        row["role"] = "held out"
        row["corrected_ms"], row["low_ms"], row["high_ms"] = correction.apply(row["roofline_ms"])
        row["scope"], row["basis"] = correction.scope, correction.basis
    for row in rows:
        row["error_before"] = abs(row["roofline_ms"] - row["measured_ms"]) / row["measured_ms"]
        if "corrected_ms" in row:
            row["error_after"] = abs(row["corrected_ms"] - row["measured_ms"]) / row["measured_ms"]
            row["inside"] = row["low_ms"] <= row["measured_ms"] <= row["high_ms"]
    return rows


def summary(rows: list[dict]) -> dict:
    held = [r for r in rows if r["role"] == "held out"]
    return {"artifacts": len(rows), "fitted_on": TRAIN, "held_out": len(held),
            "median_error_before_all": float(np.median([r["error_before"] for r in rows])),
            "median_error_before": float(np.median([r["error_before"] for r in held])),
            "median_error_after": float(np.median([r["error_after"] for r in held])),
            "interval_coverage": sum(r["inside"] for r in held) / len(held),
            "parity_passed": sum(bool(r["parity"]) for r in rows)}


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6.0 * len(results), 5.2), squeeze=False)
    for axis, (kind, result) in zip(axes[0], results.items()):
        rows = result["rows"]
        measured = [r["measured_ms"] for r in rows]
        axis.scatter(measured, [r["roofline_ms"] for r in rows], label="roofline estimate", marker="o", c="#90a4ae")
        held = [r for r in rows if "corrected_ms" in r]
        axis.errorbar([r["measured_ms"] for r in held], [r["corrected_ms"] for r in held],
                      yerr=[[r["corrected_ms"] - r["low_ms"] for r in held], [r["high_ms"] - r["corrected_ms"] for r in held]],
                      fmt="s", c="#1565c0", capsize=3, label=f"corrected from {TRAIN} measured artifacts (90% interval)")
        low, high = min(measured) / 2, max(measured) * 2
        axis.plot([low, high], [low, high], "--", c="black", lw=0.8, label="estimate = measured")
        axis.set_xscale("log"), axis.set_yscale("log")
        axis.set_xlabel(f"p50 measured on {kind}, ms")
        axis.set_ylabel("p50 estimated, ms")
        axis.set_title(f"{kind}: median error {result['summary']['median_error_before']:.0%} → "
                       f"{result['summary']['median_error_after']:.0%}", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def markdown(results: dict[str, dict], env: dict, command: str) -> str:
    lines = [f"Measured {dt.date.today().isoformat()} · host {env['cpu']} ({env['usable_cpus']} CPUs, timed with all of "
             f"them) · each device an `edgeopt agent` in a torch-free venv pinned to one core, 1 GB cap · `{command}`", "",
             "| device | held-out artifacts | median error before | after correction from 5 | 90% interval held |",
             "|---|---|---|---|---|"]
    for kind, result in results.items():
        f = result["summary"]
        lines.append(f"| {kind} | {f['held_out']} | {f['median_error_before']:.0%} (all {f['artifacts']}: "
                     f"{f['median_error_before_all']:.0%}) | **{f['median_error_after']:.0%}** | "
                     f"{f['interval_coverage']:.0%} |")
    for kind, result in results.items():
        lines += ["", f"**{kind}** ({result['device']}):", "",
                  "| artifact | MACs (M) | here p50 ms | roofline ms | device p50 ms | role | corrected ms [interval] | "
                  "error before | error after |", "|---|---|---|---|---|---|---|---|---|"]
        for r in result["rows"]:
            corrected = (f"{r['corrected_ms']:.2f} [{r['low_ms']:.2f}–{r['high_ms']:.2f}]" if "corrected_ms" in r else "")
            after = f"{r['error_after']:.0%}" if "error_after" in r else ""
            lines.append(f"| {r['name']} | {r['macs'] / 1e6:.0f} | {r['here_ms']:.2f} | {r['roofline_ms']:.2f} | "
                         f"{r['measured_ms']:.2f} | {r['role']} | {corrected} | {r['error_before']:.0%} | {after} |")
    lines += ["", "![estimate vs measured](results/agent.png)", ""]
    return "\n".join(lines)


def search_on_device(python: str, work: Path, datasets: Path, core: int, cap_mb: float) -> str:
    """``optimize --agent`` on the one-core device; the two rankings and both choices as Markdown."""
    import edgeopt
    from edgeopt.report.console import make_console
    from edgeopt.report.progress import SearchPrinter
    from edgeopt.report.search import RANKING_HEADERS, decision_text, host_choice_text, ranking_rows

    if not NEU_BASELINE.is_file():
        raise SystemExit(f"{NEU_BASELINE} is missing: train it with `python benchmarks/compression.py --datasets neu`")
    token, port = secrets.token_urlsafe(16), free_port()
    agent = start_device(python, work / "store", port, token, core, cap_mb, "emulated-1core", None)
    space = edgeopt.SearchSpace(backends=("onnxruntime", "openvino"), prune_ratios=(), resolutions=(), students=(),
                                qat=False)
    try:
        outcome = edgeopt.optimize(str(NEU_BASELINE), str(datasets / "neu_cls_64.npz"), work / "search", space=space,
                                   budget="30m", force=True, agent=edgeopt.AgentTarget(f"http://127.0.0.1:{port}", token),
                                   measurements=work / f"measurements-search-{int(time.time())}",
                                   on_event=SearchPrinter(make_console(own_stdout=True)))
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    lines = [f"Measured {dt.date.today().isoformat()} · `python benchmarks/agent.py --part search` · "
             f"`edgeopt.optimize` of {NEU_BASELINE.relative_to(ROOT)} on NEU-CLS-64 (ONNX Runtime and OpenVINO, FP32 "
             f"and INT8; no fine-tuning), every candidate timed on {outcome.measured_on} and here with "
             f"{outcome.device['host_threads']} threads:", "",
             "| " + " | ".join(RANKING_HEADERS) + " |", "|" + "---|" * len(RANKING_HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in ranking_rows(outcome)]
    lines += ["", decision_text(outcome).split(". Artifact:")[0] + ".", host_choice_text(outcome), ""]
    return "\n".join(lines)


def farm_search(python: str, work: Path, datasets: Path, cap_mb: float) -> str:
    """A farm of both emulated devices (core 0; core 1 at half speed) timing one search's candidates at once: first
    unbounded, then with a latency bound halfway between the two devices' figures for the most accurate candidate;
    each device's own choice under that bound, as Markdown."""
    import dataclasses

    import edgeopt
    from edgeopt.report.search import device_choices_text, headers, table_rows

    if not NEU_BASELINE.is_file():
        raise SystemExit(f"{NEU_BASELINE} is missing: train it with `python benchmarks/compression.py --datasets neu`")
    agents, targets = [], []
    try:
        for core, (kind, share) in enumerate(DEVICES.items()):
            token, port = secrets.token_urlsafe(16), free_port()
            agent = start_device(python, work / f"store-{kind}", port, token, core, cap_mb, kind, share)
            if agent is None:
                raise SystemExit("the half-speed device needs a writable cgroup v1 cpu controller")
            agents.append(agent)
            targets.append(edgeopt.AgentTarget(f"http://127.0.0.1:{port}", token))
        space = edgeopt.SearchSpace(backends=("openvino",), prune_ratios=(), resolutions=(), students=(), qat=False)
        goals = edgeopt.Goals(priority="accuracy")  # and the default drop bound: at most 1 point

        def search(name: str, goals):
            return edgeopt.optimize(str(NEU_BASELINE), str(datasets / "neu_cls_64.npz"), work / name, space=space,
                                    goals=goals, budget="30m", force=True, agent=targets[0], farm=targets[1:],
                                    measurements=work / f"measurements-farm-{int(time.time())}")

        open_search = search("farm-unbounded", goals)
        top = open_search.chosen
        other = open_search.device["farm"][0]
        bound = round((top.latency_ms + top.measurement.on_devices[other]) / 2, 2)
        bounded = search("farm-bounded", dataclasses.replace(goals, max_latency_ms=bound))
    finally:
        for agent in agents:
            agent.terminate()
            agent.wait(timeout=30)
        if CGROUP.exists():
            CGROUP.rmdir()
    columns = headers(bounded)
    lines = [f"Measured {dt.date.today().isoformat()} · `python benchmarks/agent.py --part farm` · "
             f"`edgeopt.optimize` of {NEU_BASELINE.relative_to(ROOT)} on NEU-CLS-64 (OpenVINO FP32 and INT8, accuracy "
             f"first, at most {goals.max_drop:g} point lost), every candidate timed at once on a farm of two emulated "
             f"devices: {bounded.measured_on} (deciding) and {other}. Unbounded, the most accurate candidate is "
             f"{top.label} ({top.latency_ms:.2f} ms on the one, {top.measurement.on_devices[other]:.2f} ms on the "
             f"other); the same search again with `--max-latency-ms {bound:g}`, halfway between:", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(bounded)]
    lines += ["", device_choices_text(bounded), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "agent")
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "edgeopt" / "bench-device-venv")
    parser.add_argument("--core", type=int, default=0, help="the CPU the emulated device is pinned to")
    parser.add_argument("--memory-cap-mb", type=float, default=1024.0)
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--part", choices=("all", "estimates", "search", "farm"), default="all")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "farm"):
        body = farm_search(lean_python(args.venv), args.work, args.datasets_dir, args.memory_cap_mb)
        print(body)
        if not args.no_write:
            write_section(FARM_START, FARM_END, body, "A farm of two emulated devices (`benchmarks/agent.py --part farm`)")
        if args.part == "farm":
            return
    if args.part in ("all", "search"):
        body = search_on_device(lean_python(args.venv), args.work, args.datasets_dir, args.core, args.memory_cap_mb)
        print(body)
        if not args.no_write:
            write_section(SEARCH_START, SEARCH_END, body, "`optimize --agent` on the emulated device (`benchmarks/agent.py --part search`)")
        if args.part == "search":
            return
    print("building the artifacts…", flush=True)
    artifacts = build(args.work / "artifacts")
    python = lean_python(args.venv)
    started, results = time.monotonic(), {}
    for kind, share in DEVICES.items():
        token, port = secrets.token_urlsafe(16), free_port()
        agent = start_device(python, args.work / "store", port, token, args.core, args.memory_cap_mb, kind, share)
        if agent is None:
            continue
        try:
            client = AgentClient(f"http://127.0.0.1:{port}", token)
            identity = client.identity()
            assert "torch" not in identity["versions"], "the device's venv must not hold torch"
            print(f"device: {label(identity)} · runs {', '.join(identity['backends'])}", flush=True)
            rows = measure(artifacts, client, profile_of(identity), host_profile(), environment.cpu_count())
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            if share is not None:
                CGROUP.rmdir()  # empty once the agent is gone
        rows = correct(rows, args.work / f"measurements-{int(time.time())}", kind)
        results[kind] = {"device": label(identity), "identity": identity, "summary": summary(rows), "rows": rows}
        print(json.dumps(results[kind]["summary"], indent=2), flush=True)
    print(f"measured in {time.monotonic() - started:.0f} s")
    if args.no_write:
        return
    out = ROOT / "benchmarks" / "results"
    (out / "agent.json").write_text(json.dumps({"devices": results, "environment": environment.collect()}, indent=2,
                                               default=str) + "\n")
    plot(results, out / "agent.png")
    write_section(START, END, markdown(results, environment.collect(), "python benchmarks/agent.py"),
                  "Estimates against the device (`benchmarks/agent.py`)")
    print(f"wrote {out / 'agent.json'}, {out / 'agent.png'} and RESULTS.md")


if __name__ == "__main__":
    main()
