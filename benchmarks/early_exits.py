"""Early exits on the NEU-CLS ResNet-18: MACs and latency per image against top-1, setting by setting.

    .venv/bin/python benchmarks/early_exits.py

The ResNet-18 trained by benchmarks/compression.py (runs/neu-resnet18.safetensors; trained here the
same way when missing) gets exit heads after layer1, layer2 and layer3, trained by distillation from
its final head (``edgeopt.early_exits``: the backbone frozen, the final exit the model as it was),
compiled stage by stage for ONNX Runtime FP32, and its settings calibrated on the validation images
the heads did not train on. Every setting is then measured on the 360 test images: top-1, mean MACs
per image against the model without exits, and latency per image at batch 1 (each test image in
turn, three passes, 2 threads, in this process), against the same model exported whole to ONNX
Runtime FP32 and timed the same way. The setting "chosen on validation" is the one calibrated for a
1-point budget. Writes its section of benchmarks/RESULTS.md and benchmarks/results/early_exits.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

import edgeopt
from edgeopt.core.exits import StagedExits
from edgeopt.measure.environment import collect as collect_environment
from edgeopt.passes.early_exit import EarlyExitConfig
from edgeopt.pipeline.exits import ExitsConfig, exits_taken, outcome, stage_logits
from edgeopt.report.console import environment_line
from edgeopt.runtime.exits import ExitRunner
from edgeopt.core.exits import confidence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- early-exits:start -->", "<!-- early-exits:end -->"
THREADS = 2
CUTS = ("layer1", "layer2", "layer3")
CHOSEN = "max-drop-1"  # the setting calibrated for a 1-point budget on validation
TRAIN = {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.05, "schedule": "onecycle"}  # as compression.py


def per_image_ms(run, images: np.ndarray, passes: int = 3) -> list[float]:
    """Latency of ``run`` on each image alone (batch 1), ``passes`` times over, after a warm-up pass."""
    for image in images[:50]:
        run(image[None])
    times = []
    for _ in range(passes):
        for image in images:
            started = time.perf_counter_ns()
            run(image[None])
            times.append((time.perf_counter_ns() - started) / 1e6)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--epochs", type=int, default=EarlyExitConfig().fine_tune.epochs)
    args = parser.parse_args()
    data = str(args.datasets_dir / "neu_cls_64.npz")
    if not Path(data).is_file():
        print(f"NEU-CLS is not at {data}; pass --datasets-dir", file=sys.stderr)
        return 2
    base = args.runs / "neu-resnet18.safetensors"
    if not base.is_file():
        edgeopt.train(data, "torchvision:resnet18", base, 30, **TRAIN, resume=True, threads=THREADS)
    started = time.perf_counter()
    config = EarlyExitConfig(cuts=CUTS, fine_tune=edgeopt.FineTune(epochs=args.epochs, lr=0.003))
    staged = edgeopt.early_exits(str(base), data, args.runs / "neu-exits", config,
                                 ExitsConfig(backend="onnxruntime", threads=THREADS), threads=THREADS, resume=True)
    build_s = time.perf_counter() - started
    full = edgeopt.export(str(base), "onnxruntime", args.runs / "neu-resnet18-ort", force=True)
    rows, details = measure(staged, full, data)
    results = args.runs.parent / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "early_exits.json").write_text(json.dumps({"rows": rows, **details}, indent=2))
    plot(rows, results / "early_exits.png")
    write_section(START, END, markdown(rows, details, build_s), "Early exits on the NEU-CLS ResNet-18 "
                  "(`benchmarks/early_exits.py`)")
    print(markdown(rows, details, build_s))
    return 0


def measure(staged: StagedExits, full, data: str) -> tuple[list[dict], dict]:
    from edgeopt.backends import get_backend
    from edgeopt.images import to_input
    from edgeopt.tasks import get_task

    test = get_task("classification").load(data, staged.input_spec).test
    images = to_input(test.images, staged.input_spec)
    logits = stage_logits(staged.stages, test, staged.input_spec, THREADS)
    full_macs = staged.record["full_macs"]
    whole = get_backend(full.backend).load(full, threads=THREADS)
    whole_top1 = float((whole.run([images])[0].argmax(1) == test.labels).mean())
    whole_ms = per_image_ms(lambda x: whole.run([x]), images)
    sessions = ExitRunner.load_sessions(staged.stages, threads=THREADS)
    rows = [{"setting": "whole model (ONNX Runtime FP32)", "thresholds": "", "val_top1": None, "top1": whole_top1,
             "macs_share": 1.0, "exits": "", "mean_ms": float(np.mean(whole_ms)), "p50_ms": float(np.median(whole_ms)),
             "p99_ms": float(np.percentile(whole_ms, 99))}]
    for setting in staged.settings:
        top1, macs = outcome(logits, test.labels, staged.exit_macs, full_macs, setting.thresholds)
        taken = exits_taken([confidence(l) for l in logits[:-1]], setting.thresholds)
        runner = ExitRunner(sessions, setting.thresholds)
        times = per_image_ms(runner.route, images)
        rows.append({"setting": setting.name, "thresholds": ", ".join(f"{t:g}" for t in setting.thresholds),
                     "val_top1": setting.validation["top1"], "top1": top1, "macs_share": macs,
                     "exits": " / ".join(str(int(n)) for n in np.bincount(taken, minlength=len(logits))),
                     "mean_ms": float(np.mean(times)), "p50_ms": float(np.median(times)),
                     "p99_ms": float(np.percentile(times, 99))})
    return rows, {"environment": collect_environment(), "cuts": staged.record["cuts"],
                  "validation_images": staged.record["validation_images"], "test_images": len(test),
                  "full_macs": full_macs, "date": dt.date.today().isoformat()}


def markdown(rows: list[dict], details: dict, build_s: float) -> str:
    whole = rows[0]
    chosen = next((r for r in rows if r["setting"] == CHOSEN), None)
    lines = [f"Measured {details['date']} on {environment_line(details['environment'])}; {THREADS} threads, batch 1, "
             f"each of the {details['test_images']} NEU-CLS test images in turn, three passes. Exits after "
             f"{', '.join(details['cuts'])}; thresholds calibrated on {details['validation_images']} validation "
             f"images. The whole model: {whole['top1']:.2%}, {details['full_macs'] / 1e6:.1f} MMACs. Heads trained "
             f"and stages built in {build_s / 60:.1f} min. Command: `python benchmarks/early_exits.py`", "",
             "| setting | thresholds | val top-1 | test top-1 | Δ pts | mean MACs | images per exit | mean ms "
             "| p50 ms | p99 ms | latency vs whole |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        val = "" if r["val_top1"] is None else f"{r['val_top1']:.2%}"
        lines.append(f"| {r['setting']} | {r['thresholds']} | {val} | {r['top1']:.2%} | "
                     f"{100 * (r['top1'] - whole['top1']):+.2f} | {r['macs_share']:.1%} | {r['exits']} | "
                     f"{r['mean_ms']:.3f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['mean_ms'] / whole['mean_ms']:.0%} |")
    if chosen is not None:
        lines += ["", f"Chosen on validation ({CHOSEN}): {chosen['top1']:.2%} on test "
                      f"({100 * (chosen['top1'] - whole['top1']):+.2f} points), mean MACs {chosen['macs_share']:.1%} "
                      f"of the whole model's, mean latency {chosen['mean_ms'] / whole['mean_ms']:.0%} of the whole "
                      "model's on ONNX Runtime."]
    return "\n".join(lines) + "\n\n![early exits](results/early_exits.png)\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, key, label in ((axes[0], "macs_share", "mean MACs per image (share of the whole model)"),
                             (axes[1], "mean_ms", "mean latency per image, ms (ONNX Runtime, batch 1)")):
        for r in rows:
            axis.scatter(r[key], 100 * r["top1"], s=40, marker="s" if r["val_top1"] is None else "o")
            axis.annotate(r["setting"].split(" (")[0], (r[key], 100 * r["top1"]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")
        axis.set(xlabel=label, ylabel="test top-1 %")
        axis.grid(True, alpha=0.3)
    figure.suptitle("Early exits on the NEU-CLS ResNet-18: settings from accuracy first to fastest")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
