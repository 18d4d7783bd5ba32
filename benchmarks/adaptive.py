"""Adapting to load: a ladder against static models as offered load rises, on real NEU-CLS test images.

    .venv/bin/python benchmarks/adaptive.py                  # about 15 minutes (training the 200-px model: 30 more)
    .venv/bin/python benchmarks/adaptive.py --seconds 5      # shorter steps

The model: a ResNet-18 trained by ``edgeopt.train`` on NEU-CLS at 200 px, the NEU images' native size
(the NEU-DET images with their class labels, ``neu_det_128.npz``, shown to the model at 200 px), so that
the full rung is compute-bound here and the model, not HTTP, sets the capacity. Rungs: the model on ONNX
Runtime FP32 (r0) and INT8 (r1), made into a ladder by ``edgeopt.ladder`` (each rung scored on the test
split and timed per batch size). The full model's capacity is its measured batch-8 throughput; the target
is ``--target-ms``.

Early exits: the same FP32 model with exit heads after layer1-3 (``edgeopt.early_exits``, the backbone frozen), its
threshold settings (accuracy first to fastest, each timed on validation images) served as the rungs.

Serving: ``edgeopt serve`` in its own process (static full, static fastest, the ladder and the early-exit model with
``--target-p99-ms``); the clients are separate processes (aiohttp, open loop: Poisson arrivals at the
offered rate, binary tensors of the test images, bounded in time), each answer scored against its
image's label. Per load step: p50/p99 of the answers, the share answered within the target, 503s,
answers within target per second and **effective accuracy** (top-1 of the answers returned within
the target; Model-Switching, HotCloud'20). The stream: the test images as a video played live at
twice the full model's batch-1 capacity, the full model alone (drop policy) against the ladder and the early-exit
model (their target: two frame intervals).
Writes its section of benchmarks/RESULTS.md and benchmarks/results/adaptive.png.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
from loopback import Server  # benchmarks/loopback.py
from results_md import write_section  # benchmarks/results_md.py

import edgeopt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- adaptive:start -->", "<!-- adaptive:end -->"
THREADS = 2
HEADER = "Inference-Header-Content-Length"
TRAIN = {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.05, "schedule": "onecycle"}
CLIENTS = 2  # client processes
SIZE = 200  # px: NEU's native size, where ResNet-18's FP32 batch of 8 takes tens of ms here
EXIT_CUTS = ("layer1", "layer2", "layer3")  # as benchmarks/early_exits.py
EXIT_EPOCHS = 3  # the heads alone train (the backbone frozen): a few epochs at 200 px


def models(data: str, runs: Path) -> dict[str, Path]:
    """The 200-px ResNet-18, its FP32 and INT8 ONNX Runtime artifacts and their ladder (built once, kept)."""
    from edgeopt.pipeline.ladder import LadderConfig

    base = runs / f"neu{SIZE}-resnet18.safetensors"
    if not base.is_file():
        edgeopt.train(data, "torchvision:resnet18", base, 10, **TRAIN, resume=True, threads=THREADS, input_size=SIZE)
    out = runs / f"adaptive-{SIZE}"
    paths = {"full": out / "fp32", "fastest": out / "int8", "ladder": out / "ladder", "early exits": out / "exits"}
    if not paths["full"].is_dir():
        edgeopt.export(str(base), "onnxruntime", paths["full"])
    if not paths["fastest"].is_dir():
        edgeopt.quantize(str(base), data, "onnxruntime", paths["fastest"])
    if not paths["ladder"].is_dir():
        edgeopt.ladder(paths["ladder"], [paths["full"], paths["fastest"]], data=data,
                       config=LadderConfig(threads=THREADS, keep_order=True))  # FP32 on top, whatever one image says
    if not (paths["early exits"] / "exits.json").is_file() or not _timed(paths["early exits"]):
        # the same FP32 model with exit heads; its settings (timed on validation images) are the rungs
        from edgeopt.passes.early_exit import EarlyExitConfig
        from edgeopt.pipeline.exits import ExitsConfig

        config = EarlyExitConfig(cuts=EXIT_CUTS, fine_tune=edgeopt.FineTune(epochs=EXIT_EPOCHS, lr=0.003))
        edgeopt.early_exits(str(base), data, paths["early exits"], config,
                            ExitsConfig(backend="onnxruntime", threads=THREADS), threads=THREADS, resume=True)
    return paths


def _timed(path: Path) -> bool:
    from edgeopt.core.exits import StagedExits

    return StagedExits.open(path).timed


def request_bodies(data: str, artifact: Path) -> tuple[list[bytes], np.ndarray, str]:
    """Each test image as an OIP binary request (preprocessed as the artifact, or an early-exit model's first stage,
    says), the labels, the output name."""
    from edgeopt.core.artifact import Artifact
    from edgeopt.core.exits import StagedExits, is_staged_exits
    from edgeopt.images import to_input
    from edgeopt.tasks import get_task

    if is_staged_exits(artifact):
        staged = StagedExits.open(artifact)
        spec, output = staged.input_spec, staged.stages[-1].outputs[0].name
    else:  # an artifact, or a ladder: its rungs take the same input and name the same outputs
        from edgeopt.core.ladder import Ladder, is_ladder

        loaded = Ladder.open(artifact).rungs[0].artifact if is_ladder(artifact) else Artifact.open(artifact)
        spec, output = loaded.input_spec, loaded.outputs[0].name
    test = get_task("classification").load(data, spec).test
    inputs = to_input(test.images, spec)
    bodies = []
    for row in inputs:
        header = json.dumps({"inputs": [{"name": spec.name, "shape": [1, *row.shape], "datatype": "FP32",
                                         "parameters": {"binary_data_size": row.nbytes}}],
                             "outputs": [{"name": output, "parameters": {"binary_data": False}}]}).encode()
        bodies.append(len(header).to_bytes(4, "little") + header + row.tobytes())
    return bodies, test.labels, output


def _client(url: str, bodies: list[bytes], rate: float, seconds: float, seed: int, queue) -> None:
    """One client process: Poisson arrivals at ``rate`` for ``seconds``; each answer's record onto ``queue``."""
    import aiohttp

    async def run() -> list[tuple]:
        rng = np.random.default_rng(seed)
        records: list[tuple] = []
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            async def one(index: int, sent: float) -> None:
                body = bodies[index]
                length = int.from_bytes(body[:4], "little")
                try:
                    async with session.post(url, data=body[4:], headers={HEADER: str(length)}) as reply:
                        payload = await reply.read()
                        status = reply.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    records.append((index, sent, time.perf_counter() - sent, 0, None, None))
                    return
                rung, top = None, None
                if status == 200:
                    answer = json.loads(payload)
                    rung = (answer.get("parameters") or {}).get("rung")
                    top = int(np.argmax(answer["outputs"][0]["data"]))
                records.append((index, sent, time.perf_counter() - sent, status, rung, top))

            tasks, start, clock = [], time.perf_counter(), 0.0
            while True:
                clock += rng.exponential(1.0 / rate)
                if clock >= seconds:
                    break
                delay = start + clock - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(int(rng.integers(len(bodies))), time.perf_counter())))
            await asyncio.gather(*tasks)
        return records

    queue.put(asyncio.run(run()))


def offer(url: str, bodies: list[bytes], rate: float, seconds: float, step: int) -> list[tuple]:
    """``rate`` requests per second for ``seconds`` from ``CLIENTS`` processes; every answer's record."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_client, args=(url, bodies, rate / CLIENTS, seconds, 1000 * step + i, queue))
               for i in range(CLIENTS)]
    for worker in workers:
        worker.start()
    records = [r for _ in workers for r in queue.get(timeout=seconds + 120)]
    for worker in workers:
        worker.join()
    return records


def summarize(records: list[tuple], labels: np.ndarray, target_ms: float, seconds: float) -> dict:
    answered = [r for r in records if r[3] == 200]
    latencies = np.asarray([r[2] * 1000 for r in answered] or [np.nan])
    in_time = [r for r in answered if r[2] * 1000 <= target_ms]
    rungs: dict[str, int] = {}
    for r in answered:
        if r[4] is not None:
            rungs[r[4]] = rungs.get(r[4], 0) + 1
    return {"sent": len(records), "answered": len(answered), "refused_503": sum(r[3] == 503 for r in records),
            "other": sum(r[3] not in (200, 503) for r in records),
            "p50_ms": float(np.nanpercentile(latencies, 50)), "p99_ms": float(np.nanpercentile(latencies, 99)),
            "within_target_share": len(in_time) / max(len(answered), 1),
            "within_target_per_s": len(in_time) / seconds,
            "effective_accuracy": float(np.mean([labels[r[0]] == r[5] for r in in_time])) if in_time else 0.0,
            "rungs": rungs}


def serve_steps(name: str, path: Path, bodies, labels, capacity: float, steps: list[float], seconds: float,
                target_ms: float, ladder: bool) -> list[dict]:
    from edgeopt.serve.app import ServeSettings

    settings = ServeSettings(max_batch=8, max_queue=1024, request_timeout_s=30.0,
                             target_p99_ms=target_ms if ladder else None)
    rows = []
    model = name.replace(" ", "-")  # a served model's name is one word
    server = Server({model: path}, settings, threads=THREADS)
    try:
        url = f"{server.url}/v2/models/{model}/infer"
        offer(url, bodies, 20, 1.0, 0)  # warm the connections and the model
        for index, multiple in enumerate(steps, start=1):
            records = offer(url, bodies, multiple * capacity, seconds, index)
            row = {"config": name, "load": multiple, "offered_per_s": multiple * capacity,
                   **summarize(records, labels, target_ms, seconds)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            time.sleep(1.0)  # the queue drains before the next step
    finally:
        server.stop()
    return rows


def stream_runs(data: str, paths: dict[str, Path], capacity_b1: float, scratch: Path) -> list[dict]:
    """The test images as a live video at twice the full model's batch-1 capacity: full alone, then the ladder
    with a target of two frame intervals (a frame answered before the next but one arrives: the stream keeps up)."""
    import cv2

    from edgeopt.tasks import get_task
    from edgeopt.core.artifact import Artifact

    spec = Artifact.open(paths["full"]).input_spec
    test = get_task("classification").load(data, spec).test
    fps = min(1000, round(2 * capacity_b1))  # a whole number: AVI's time base drops frames at a fractional rate
    frames = [test.images[i % len(test)] for i in range(int(fps * 8))]
    video = scratch / "neu-test.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame[..., 0], cv2.COLOR_GRAY2BGR) if frame.shape[-1] == 1 else frame[..., ::-1])
    writer.release()
    from edgeopt.stream import StreamConfig, run_stream

    runs = []
    target_ms = 2 * 1000 / fps
    for label, artifact, target in (("full (drop policy)", paths["full"], None), ("ladder", paths["ladder"], target_ms),
                                    ("early exits", paths["early exits"], target_ms)):
        records: list[dict] = []
        stats = run_stream(str(video), artifact, StreamConfig(realtime=True, threads=THREADS, target_ms=target),
                           on_record=records.append).summary()
        right = [test.classes.index(r["label"]) == test.labels[r["frame"] % len(test)] for r in records]
        runs.append({"run": label, "fps": fps, "target_ms": target, "received": stats["received"], "processed": stats["processed"],
                     "skipped": stats["skipped"], "accuracy": float(np.mean(right)) if right else 0.0,
                     "correct_per_s": sum(right) / stats["seconds"], "p50_ms": stats["latency_p50_ms"],
                     "rungs": stats.get("rungs", {})})
        print(json.dumps(runs[-1]), flush=True)
    return runs


def markdown(rows: list[dict], streams: list[dict], details: dict) -> str:
    lines = [f"Measured {details['date']} on {details['machine']}; server `edgeopt serve --threads {THREADS} "
             f"--max-batch 8` in its own process, {CLIENTS} client processes (aiohttp, open loop, Poisson arrivals, "
             f"{details['seconds']:g} s a step) on the same 2 CPUs; {details['images']} NEU-CLS test images at {SIZE} px. "
             f"Rungs (top-1 on the test split): {details['rungs']}. The full model's capacity (batch-8 throughput): "
             f"{details['capacity']:.0f} requests/s; target {details['target_ms']:g} ms. Early exits: the FP32 "
             f"model with exit heads after {', '.join(details['exit_cuts'])} ({EXIT_EPOCHS} epochs, backbone frozen), "
             f"its settings the rungs: {details['exits']}. "
             "Command: `python benchmarks/adaptive.py`", "",
             "| config | load × capacity | offered /s | sent | answered | 503 | p50 ms | p99 ms | within target "
             "| in target /s | effective accuracy | rungs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rungs = ", ".join(f"{k} {v}" for k, v in sorted(r["rungs"].items()))
        lines.append(f"| {r['config']} | {r['load']:g}× | {r['offered_per_s']:.0f} | {r['sent']} | {r['answered']} | "
                     f"{r['refused_503']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['within_target_share']:.1%} | "
                     f"{r['within_target_per_s']:.0f} | {r['effective_accuracy']:.2%} | {rungs} |")
    lines += ["", f"The stream: the test images as a live video at {streams[0]['fps']:.0f} fps (twice the full "
                  "model's batch-1 capacity), `edgeopt.stream.run_stream(realtime=True)` (what `edgeopt stream --realtime` runs); "
                  f"the ladder's and the early-exit model's target: two frame intervals, {streams[-1]['target_ms']:.0f} ms.", "",
              "| run | received | processed | skipped | top-1 of processed | correct frames /s | p50 ms | frames per rung |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in streams:
        rungs = ", ".join(f"{k} {v}" for k, v in sorted(s["rungs"].items()))
        lines.append(f"| {s['run']} | {s['received']} | {s['processed']} | {s['skipped']} | {s['accuracy']:.2%} | "
                     f"{s['correct_per_s']:.1f} | {s['p50_ms']:.1f} | {rungs} |")
    return "\n".join(lines) + "\n\n![adaptive](results/adaptive.png)\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for config in dict.fromkeys(r["config"] for r in rows):
        points = [r for r in rows if r["config"] == config]
        loads = [r["load"] for r in points]
        axes[0].plot(loads, [r["within_target_per_s"] for r in points], marker="o", label=config)
        axes[1].plot(loads, [100 * r["within_target_share"] for r in points], marker="o", label=config)
        axes[2].plot(loads, [100 * r["effective_accuracy"] for r in points], marker="o", label=config)
    for axis, title in zip(axes, ("answers within target per second", "share of answers within target, %",
                                  "effective accuracy, %")):
        axis.set(xlabel="offered load (x the full model's capacity)", title=title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--steps", default="0.25,0.5,1,2,3,4")
    parser.add_argument("--target-ms", type=float, default=None, help="default: 4x the full model's batch-8 p50")
    args = parser.parse_args()
    data = str(args.datasets_dir / "neu_det" / "neu_det_128.npz")
    if not Path(data).is_file():
        print(f"NEU at 128 px is not at {data}; pass --datasets-dir", file=sys.stderr)
        return 2
    from edgeopt.core.exits import StagedExits
    from edgeopt.core.ladder import Ladder
    from edgeopt.measure.environment import collect
    from edgeopt.report.console import environment_line

    paths = models(data, args.runs)
    ladder = Ladder.open(paths["ladder"])
    full = ladder.rungs[0].latency_ms
    capacity = 8 * 1000 / full[8]["p50"]
    target = args.target_ms or round(4 * full[8]["p50"], 1)
    steps = [float(s) for s in args.steps.split(",")]
    rows = []
    for name, ladder_on in (("full", False), ("fastest", False), ("ladder", True), ("early exits", True)):
        bodies, labels, _ = request_bodies(data, paths[name])
        # each configuration's rows are kept as they are measured: a failure later does not cost the earlier ones
        kept = args.runs / f"adaptive-{SIZE}" / f"rows-{name.replace(' ', '-')}.json"
        setup = {"seconds": args.seconds, "steps": steps, "target_ms": target, "capacity": round(capacity, 3)}
        saved = json.loads(kept.read_text()) if kept.is_file() else {}
        if saved.get("setup") == setup:
            print(f"{name}: the rows measured before with the same setup ({kept})", flush=True)
            rows += saved["rows"]
            continue
        measured = serve_steps(name, paths[name], bodies, labels, capacity, steps, args.seconds, target, ladder_on)
        kept.write_text(json.dumps({"setup": setup, "rows": measured}, indent=1))
        rows += measured
    scratch = args.runs / f"adaptive-{SIZE}" / "stream"
    scratch.mkdir(parents=True, exist_ok=True)
    streams = stream_runs(data, paths, 1000 / full[1]["p50"], scratch)
    staged = StagedExits.open(paths["early exits"])
    details = {"date": dt.date.today().isoformat(), "machine": environment_line(collect()), "seconds": args.seconds,
               "images": len(labels), "capacity": capacity, "target_ms": target,
               "rungs": ", ".join(f"{r.name} {r.artifact.backend} {r.artifact.precision} {r.quality.get('top1', 0):.2%}"
                                  for r in ladder.rungs),
               "exits": ", ".join(f"{s.name} (val {s.validation['top1']:.2%}, {s.validation['mean_macs_share']:.0%} "
                                  f"MACs, {s.latency_ms[8]['p50']:.0f} ms at batch 8)" for s in staged.settings),
               "exit_cuts": list(staged.record["cuts"])}
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "adaptive.json").write_text(json.dumps({"rows": rows, "streams": streams, **details}, indent=2))
    plot(rows, results / "adaptive.png")
    text = markdown(rows, streams, details)
    write_section(START, END, text, "Adapting to load: ladders against static models (`benchmarks/adaptive.py`)")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
