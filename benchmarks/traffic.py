"""The guide's traffic scenario on a real camera: a vehicle detector trained on the highway frames,
optimized by mAP for a Raspberry Pi 4B, counting vehicles in ``test.mp4`` at 320x240 and 640x480.

    .venv/bin/python benchmarks/traffic.py     # ~90 min the first time (training ~45, search ~20); ~10 min after

Every step is one of the product's own commands, run as a subprocess, its output kept in
``runs/traffic/`` (a step whose output exists is not run again):

1. ``edgeopt train`` on ``../shared/datasets/highway`` (730 training frames, 320x240, one class
   "vehicle"): SSDlite (MobileNetV3) at the frames' native 320x240, anchors from 3% to 40% of the input
   (most vehicles here are 10-30 px; torchvision's default starts at 20%).
2. ``edgeopt optimize --device rpi4b --metric map50 --max-accuracy-drop 1.5``: ONNX Runtime and OpenVINO,
   FP32 and INT8, on the highway test split; latency on the Pi is the device estimate with its interval.
3. ``edgeopt eval`` of the FP32 model and of the chosen artifact (mAP@0.5 on the 501 test frames).
4. ``edgeopt stream test.mp4 ARTIFACT --line 300,160,40,160`` (the video at its native 320x240, and
   scaled to 640x480 as the guide's camera gives it, the line scaled with it), on this machine's 2 CPUs
   and on an emulated Pi-class device: one core (``taskset`` and ``--threads 1``), and one core at half
   speed (the CFS bandwidth limit of ``benchmarks/agent.py``). Frames per second are end to end: decode,
   preprocess, network, decoding + NMS, tracking and counting. With ``--realtime`` (the video delivered
   at its 25 fps, as a camera would), received = processed + skipped is checked.
5. Counts against ``benchmarks/traffic_counts.csv`` (counted by hand): each crossing the stream counted
   is matched to a hand-counted vehicle within ±10 frames; missed vehicles and extra counts are listed.
6. Energy: the stream's joules per frame where the machine has RAPL/hwmon counters ("not available"
   otherwise), and for a Pi 4B the estimate from its profile's published power draw.

Writes its section of benchmarks/RESULTS.md and benchmarks/results/traffic.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- traffic:start -->", "<!-- traffic:end -->"
ARCH = "edgeopt.models.detectors:ssdlite?min_ratio=0.03&max_ratio=0.4"
EPOCHS = 30
LINE = (300, 160, 40, 160)  # in 320x240 pixels, right to left: a vehicle coming down the image counts "in"
MATCH_FRAMES = 10  # a counted crossing matches a hand-counted vehicle this close in time
HALF_SPEED = 0.5


# The stream on the emulated device runs in its own process (pinned by taskset, throttled by the cgroup): the
# library's run_stream, its records and summary written as `edgeopt stream --out --summary` writes them.
STREAM_MAIN = """
import json, sys
from pathlib import Path
from edgeopt.stream import StreamConfig, run_stream
a = json.loads(sys.argv[1])
with open(a["records"], "w") as out:
    stats = run_stream(a["video"], a["artifact"], StreamConfig(line=tuple(a["line"]), threads=a["threads"],
                       realtime=a["realtime"]), on_record=lambda r: out.write(json.dumps(r) + "\\n"))
Path(a["summary"]).write_text(json.dumps(stats.summary(), indent=2))
"""


def train(data: Path, work: Path) -> Path:
    import edgeopt

    checkpoint = work / "highway-ssdlite.safetensors"
    if not checkpoint.is_file():
        edgeopt.train(str(data), ARCH, checkpoint, EPOCHS, lr=0.004, batch_size=16, threads=2, task="detection")
    return checkpoint


def optimize(checkpoint: Path, data: Path, work: Path, budget: str) -> dict:
    import edgeopt
    from edgeopt.core.errors import EdgeoptError

    folder = work / "optimize"
    if not (folder / "results.json").is_file():
        space = edgeopt.SearchSpace(backends=("onnxruntime", "openvino"), prune_ratios=(0.5,), resolutions=(),
                                    students=(), qat=False, epochs=3)
        try:
            edgeopt.optimize(str(checkpoint), str(data), folder, goals=edgeopt.Goals(max_drop=1.5, metric="map50"),
                             device="rpi4b", budget=budget, space=space)
        except EdgeoptError as exc:  # nothing met the goals: the results say why
            print(f"optimize: {exc}", flush=True)
    return json.loads((folder / "results.json").read_text())


def evaluate(model: Path, data: Path, work: Path, name: str) -> tuple[dict, Path]:
    """``edgeopt.evaluate`` on the test split: its metrics, and every frame's boxes scoring at least 0.3."""
    import edgeopt

    out, predictions = work / f"eval-{name}.json", work / f"eval-{name}-predictions.jsonl"
    if not out.is_file():
        report = edgeopt.evaluate(str(model), str(data), predictions=True)
        predictions.write_text("".join(json.dumps({"index": i, **record}) + "\n"
                                       for i, record in enumerate(report.pop("predictions"))))
        out.write_text(json.dumps(report, default=str))
    return json.loads(out.read_text()), predictions


def video_640(source: Path, work: Path) -> Path:
    """``source`` scaled to 640x480 (bilinear), as a 640x480 camera would give the same scene."""
    import cv2

    out = work / "test-640x480.mp4"
    if out.is_file():
        return out
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = cv2.VideoWriter(str(work / "partial.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (640, 480), interpolation=cv2.INTER_LINEAR))
    writer.release()
    capture.release()
    (work / "partial.mp4").rename(out)
    return out


def half_speed_prefix() -> tuple[str, ...] | None:
    """A shell prefix that puts the command in ``benchmarks/agent.py``'s half-speed cgroup (None where this machine
    cannot limit CPU bandwidth)."""
    from agent import half_speed_cgroup  # benchmarks/agent.py

    procs = half_speed_cgroup(HALF_SPEED)
    return None if procs is None else ("sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh")


def stream(video: Path, artifact: Path, scale: int, device: str, work: Path, realtime: bool = False,
           model: str = "chosen") -> dict | None:
    """One ``edgeopt stream`` run: its summary, and the frames at which its line counts went up."""
    prefix: tuple[str, ...] = ()
    threads = 2
    if device != "host":
        prefix, threads = ("taskset", "-c", "1"), 1
        if device == "1 core at half speed":
            cgroup = half_speed_prefix()
            if cgroup is None:
                return None
            prefix = (*cgroup, *prefix)
    name = f"{model.replace(' ', '_')}-{video.stem}-{device.replace(' ', '_')}{'-realtime' if realtime else ''}"
    summary, records = work / f"stream-{name}.json", work / f"stream-{name}.jsonl"
    if not (summary.is_file() and records.is_file()):
        settings = {"video": str(video), "artifact": str(artifact), "line": [v * scale for v in LINE],
                    "threads": threads, "realtime": realtime, "summary": str(summary), "records": str(records)}
        print(f"stream {name}", flush=True)
        subprocess.run([*prefix, sys.executable, "-c", STREAM_MAIN, json.dumps(settings)], check=True,
                       stderr=subprocess.DEVNULL)
    figures = json.loads(summary.read_text())
    events, before = [], {"in": 0, "out": 0}
    for row in map(json.loads, records.read_text().splitlines()):
        counts = row.get("counts", before)
        for direction in ("in", "out"):
            events += [(row["frame"], direction)] * (counts.get(direction, 0) - before[direction])
        before = dict(counts)
    return {"model": model, "video": video.name, "size": f"{320 * scale}x{240 * scale}", "device": device,
            "realtime": realtime,
            **figures, "events": events}


def agent_latency(artifact: Path, work: Path, venv: Path) -> list[dict]:
    """The chosen artifact measured by ``edgeopt agent`` on each emulated device of ``benchmarks/agent.py``
    (a torch-free venv pinned to one core, 1 GB cap; and that core at half speed): batch 1, its outputs checked
    against this machine's."""
    import secrets

    from agent import CGROUP as AGENT_CGROUP, DEVICES, TIMING, lean_python, start_device  # benchmarks/agent.py
    from loopback import free_port

    from edgeopt.agent.client import AgentClient
    from edgeopt.agent.remote import measure_on_device
    from edgeopt.measure.process import MeasureConfig

    python, rows = lean_python(venv), []
    for kind, share in DEVICES.items():
        token, port = secrets.token_urlsafe(16), free_port()
        device = start_device(python, work / "agent-store", port, token, 1, 1024.0, kind, share)
        if device is None:
            continue
        try:
            result = measure_on_device(AgentClient(f"http://127.0.0.1:{port}", token), artifact,
                                       MeasureConfig(timing=TIMING))
        finally:
            device.terminate()
            device.wait(timeout=30)
            if share is not None:
                AGENT_CGROUP.rmdir()  # empty once the agent is gone
        timing = result["timing"]["batches"]["1"]
        rows.append({"device": kind, "p50_ms": timing["p50"], "p99_ms": timing.get("p99"),
                     "peak_rss_mb": timing["peak_rss_mb"], "parity": result["parity"]["passed"]})
        print(f"  agent on {kind}: p50 {timing['p50']:.2f} ms", flush=True)
    return rows


def compare_counts(events: list[tuple[int, str]], hand: list[dict]) -> dict:
    """Each counted crossing matched to the nearest unmatched hand-counted vehicle (same direction, within
    ``MATCH_FRAMES``); the rest are misses (hand only) and extras (stream only)."""
    direction_of = {"down": "in", "up": "out"}
    unmatched = [dict(h, direction=direction_of[h["direction"]]) for h in hand]
    matched, extra = [], []
    for frame, direction in events:
        near = [h for h in unmatched if h["direction"] == direction and abs(h["frame"] - frame) <= MATCH_FRAMES]
        if near:
            best = min(near, key=lambda h: abs(h["frame"] - frame))
            unmatched.remove(best)
            matched.append((frame, best["frame"]))
        else:
            extra.append((frame, direction))
    counted = {d: sum(1 for _, e in events if e == d) for d in ("in", "out")}
    by_hand = {d: sum(1 for h in hand if direction_of[h["direction"]] == d) for d in ("in", "out")}
    return {"counted": counted, "by_hand": by_hand, "matched": matched, "missed": unmatched, "extra": extra}


def read_hand_counts() -> list[dict]:
    lines = [line for line in (HERE / "traffic_counts.csv").read_text().splitlines() if not line.startswith("#")]
    return [{"frame": int(row["frame"]), "lane": row["lane"], "direction": row["direction"], "vehicle": row["vehicle"]}
            for row in csv.DictReader(lines)]


def fastest_int8(results: dict) -> dict | None:
    """The INT8 candidate of the search that met the goals with the lowest (estimated) latency, or None."""
    int8 = [c for c in results.get("candidates", []) if c.get("status") == "ok" and c.get("artifact")
            and (c.get("recipe") or {}).get("export", {}).get("precision") == "int8"
            and not (c.get("recipe") or {}).get("steps")]
    return min(int8, key=lambda c: c["measurement"]["latency_ms"], default=None)


def pi_estimate(results: dict) -> dict:
    """The chosen artifact's latency on a Raspberry Pi 4B as optimize estimated it, and the energy per frame from
    the profile's published power draw (both estimates)."""
    from edgeopt.devices import get_device
    from edgeopt.measure.energy import estimate_joules

    measurement = (results.get("chosen") or {}).get("measurement") or {}
    p50 = measurement.get("latency_ms")
    watts = get_device("rpi4b").busy_watts
    low, high = measurement.get("estimate_low_ms"), measurement.get("estimate_high_ms")
    return {"p50_ms": p50, "interval_ms": [low, high] if low and high else None, "estimated": measurement.get("estimated"),
            "busy_watts": watts, "joules_per_frame": estimate_joules(watts, p50 / 1000) if p50 and watts else None}


def markdown(details: dict, runs: list[dict], counts: dict) -> str:
    pi = details["pi"]
    interval = pi["interval_ms"]
    lines = [
        f"Measured {details['date']} on {details['machine']}. Data: the highway camera (730 training and 501 test frames, "
        f"320x240, one class). Command: `python benchmarks/traffic.py`",
        "",
        f"- FP32 detector (`edgeopt train`, SSDlite at 320x240, anchors 3-40%): test mAP@0.5 **{details['fp32_map50']:.2%}** "
        f"(mAP@0.5:0.95 {details['fp32_map']:.2%}).",
        f"- Chosen for a Raspberry Pi 4B (`edgeopt optimize --device rpi4b --metric map50 --max-accuracy-drop 1.5`): "
        f"{details['chosen']}, test mAP@0.5 **{details['chosen_map50']:.2%}** "
        f"({100 * (details['chosen_map50'] - details['fp32_map50']):+.2f} points).",
        *([f"- The fastest INT8 candidate of that search, {details['int8']['label']}: test mAP@0.5 "
           f"**{details['int8']['map50']:.2%}** ({100 * (details['int8']['map50'] - details['fp32_map50']):+.2f} points "
           "against FP32)."] if details["int8"] else []),
        f"- Raspberry Pi 4B, **estimated** (roofline corrected by earlier device measurements): p50 "
        f"{pi['p50_ms']:.1f} ms a frame" + (f" (interval {interval[0]:.1f}-{interval[1]:.1f} ms)" if interval else "")
        + f"; energy **estimated** from its profile's {pi['busy_watts']} W busy draw: "
        f"{pi['joules_per_frame']:.3f} J a frame (the network alone, all cores busy)." if pi["p50_ms"] else
        "- Raspberry Pi 4B: no estimate (optimize chose nothing).",
        *[f"- The network alone through `edgeopt agent` on the emulated device ({row['device']}, torch-free venv): p50 "
          f"**{row['p50_ms']:.2f} ms** at batch 1, peak RSS {row['peak_rss_mb']:.0f} MB, outputs match this machine's: "
          f"{row['parity']}." for row in details["on_device"]],
        "",
        "True boxes found (a reported box scoring at least 0.3 with IoU at least 0.5), by the box's size (square root "
        "of its area, in 320x240 pixels):",
        "",
        "| model | " + " | ".join(row["size_px"] + " px" for row in details["found_by_size"]["FP32"]) + " |",
        "|---|" + "---:|" * len(details["found_by_size"]["FP32"]),
        *[f"| {name} | " + " | ".join(f"{row['found']} / {row['boxes']} ({row['found'] / max(row['boxes'], 1):.0%})"
                                      for row in rows) + " |" for name, rows in details["found_by_size"].items()],
        "",
        "| model | video | device | realtime | received | processed | skipped | frames/s end to end | p50 ms | counts in / out | energy |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        energy = run["energy"]
        joules = f"{energy['joules_per_frame']} J/frame" if energy["joules_per_frame"] is not None else "not available"
        lines.append(f"| {run['model']} | {run['size']} | {run['device']} | {'yes' if run['realtime'] else 'no'} | {run['received']} | "
                     f"{run['processed']} | {run['skipped']} | {run['processed_fps']:.1f} | {run['latency_p50_ms']:.1f} | "
                     f"{run.get('counts', {}).get('in', 0)} / {run.get('counts', {}).get('out', 0)} | {joules} |")
    lines += ["", "Counts against the hand count (`benchmarks/traffic_counts.csv`, 9 vehicles, all coming down the "
              "image: \"in\"):", ""]
    for name, result in counts.items():
        missed = ", ".join(f"frame {m['frame']} ({m['lane']} lane, {m['vehicle']})" for m in result["missed"]) or "none"
        extra = ", ".join(f"frame {f} ({d})" for f, d in result["extra"]) or "none"
        lines.append(f"- {name}: in {result['counted']['in']} (hand {result['by_hand']['in']}), out "
                     f"{result['counted']['out']} (hand {result['by_hand']['out']}); matched {len(result['matched'])}; "
                     f"missed: {missed}; extra: {extra}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--budget", default="20m", help="optimize's search budget")
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "edgeopt" / "bench-device-venv",
                        help="the emulated device's torch-free venv (made once, as benchmarks/agent.py does)")
    args = parser.parse_args()
    data = args.datasets_dir / "highway"
    if not (data / "test.mp4").is_file():
        print(f"the highway dataset is not at {data}; pass --datasets-dir", file=sys.stderr)
        return 2
    if shutil.which("taskset") is None:
        print("taskset (util-linux) is needed to pin the emulated device to one core", file=sys.stderr)
        return 2
    from edgeopt.measure.environment import collect
    from edgeopt.report.console import environment_line

    work = args.runs / "traffic"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    checkpoint = train(data, work)
    results = optimize(checkpoint, data, work, args.budget)
    chosen = work / "optimize" / "best"
    if not (chosen / "manifest.json").is_file():
        print("optimize chose no artifact: see runs/traffic/optimize/report.md", file=sys.stderr)
        return 1
    (fp32, fp32_boxes), (best, best_boxes) = evaluate(checkpoint, data, work, "fp32"), evaluate(chosen, data, work, "chosen")
    found = {"FP32": recall_by_size(fp32_boxes, data / "instances_test.json"),
             "chosen": recall_by_size(best_boxes, data / "instances_test.json")}
    native, wide = data / "test.mp4", video_640(data / "test.mp4", work)
    int8 = fastest_int8(results)
    plan = [(native, 1, "host", False), (native, 1, "1 core", False), (wide, 2, "1 core", False),
            (wide, 2, "1 core", True), (native, 1, "1 core at half speed", False), (wide, 2, "1 core at half speed", False)]
    runs = [stream(video, chosen, scale, device, work, realtime) for video, scale, device, realtime in plan]
    if int8 is not None:  # the guide's Pi runs INT8: the fastest INT8 candidate too, at 640x480 on the device
        runs += [stream(wide, work / "optimize" / int8["artifact"], 2, device, work, model=f"INT8: {int8['label']}")
                 for device in ("1 core", "1 core at half speed")]
    runs = [run for run in runs if run is not None]
    on_device = agent_latency(chosen, work, args.venv)
    hand = read_hand_counts()
    counts = {f"{run['model']}, {run['size']} on {run['device']}{' (realtime)' if run['realtime'] else ''}":
              compare_counts(run["events"], hand) for run in runs}
    for run in runs:
        if run["realtime"]:
            assert run["received"] == run["processed"] + run["skipped"], run
    chosen_record = results.get("chosen") or {}
    details = {"date": dt.date.today().isoformat(), "machine": environment_line(collect()),
               "fp32_map50": fp32["metrics"]["map50"], "fp32_map": fp32["metrics"]["map"],
               "chosen": chosen_record.get("label", "?"), "chosen_map50": best["metrics"]["map50"],
               "int8": {"label": int8["label"], "map50": int8["measurement"]["metrics"]["map50"]} if int8 else None,
               "pi": pi_estimate(results), "on_device": on_device, "found_by_size": found, "minutes": (time.perf_counter() - started) / 60}
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "traffic.json").write_text(json.dumps({**details, "runs": runs, "counts": counts}, indent=1))
    text = markdown(details, runs, counts)
    write_section(START, END, text, "The traffic scenario: vehicles on a highway camera (`benchmarks/traffic.py`)")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
