"""Detection on NEU-DET: the guide's defect-detection table, through the library.

    .venv/bin/python benchmarks/detection.py                 # train (if missing), compile, measure
    .venv/bin/python benchmarks/detection.py --skip-prune    # without the pruned student (15 min less)

Reads ../shared/datasets/neu_det (or --datasets-dir); never copies it. The baseline is
``edgeopt.models.detectors:ssdlite`` (MobileNetV3 SSDlite at 128 px, 1-channel stem) trained from
scratch by ``edgeopt.train(task="detection")`` — the same as

    edgeopt train ../shared/datasets/neu_det --task detection --arch edgeopt.models.detectors:ssdlite \\
        --out runs/neu-det/ssdlite-128.safetensors --epochs 60 --batch-size 32 --lr 0.004 --threads 2

Rows: eager FP32; ONNX Runtime and OpenVINO FP32; INT8 (static PTQ, 300 calibration images)
with the box/class predictors kept in float (the default) and quantized too; ExecuTorch
(XNNPACK) FP32 and INT8 where it compiles; prune 50% + 15 epochs KD, then INT8. Every artifact
is verified against the FP32 model when compiled (boxes matched, not logits), scored with
faster-coco-eval on the 360 test images, and timed in a fresh worker process on real test
images at batch 1 with 2 threads: latency = network + decoding + NMS (what a caller waits for).
The table replaces its section of benchmarks/RESULTS.md; JSON goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

import edgeopt
from edgeopt import ExportConfig, FineTune, QuantizationConfig, Recipe
from edgeopt.core.errors import EdgeoptError
from edgeopt.measure.environment import collect as collect_environment
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.process import MeasureConfig, time_artifact
from edgeopt.passes.prune import PruneConfig
from edgeopt.report.console import environment_line

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- detection:start -->", "<!-- detection:end -->"
THREADS = 2
ARCH = "edgeopt.models.detectors:ssdlite"
TRAIN = {"epochs": 60, "batch_size": 32, "lr": 0.004}
PRUNE_TUNE = FineTune(epochs=15, lr=0.001)  # KD from the baseline (the pass default)
FLOAT_HEAD, INT8_HEAD = QuantizationConfig(), QuantizationConfig(quantize_head=True)


@dataclass
class Row:
    model: str
    backend: str
    precision: str
    artifact: str
    map50: float = 0.0
    map: float = 0.0
    box_recall: float | None = None
    size_mb: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    note: str = ""


def exports() -> list[tuple[str, ExportConfig]]:
    return [("FP32", ExportConfig("eager")), ("FP32", ExportConfig("onnxruntime")), ("FP32", ExportConfig("openvino")),
            ("INT8, head float", ExportConfig("onnxruntime", "int8", FLOAT_HEAD)),
            ("INT8, head INT8", ExportConfig("onnxruntime", "int8", INT8_HEAD)),
            ("INT8, head float", ExportConfig("openvino", "int8", FLOAT_HEAD)),
            ("INT8, head INT8", ExportConfig("openvino", "int8", INT8_HEAD)),
            ("FP32", ExportConfig("executorch")),
            ("INT8, whole model", ExportConfig("executorch", "int8", QuantizationConfig()))]


def build_rows(name: str, checkpoint: Path, data: str, artifacts: Path, which: list[tuple[str, ExportConfig]]) -> list[Row]:
    rows = []
    for how, export in which:
        recipe = Recipe(str(checkpoint), data, export=export)
        out = artifacts / f"{name}-{recipe.hash}"
        try:
            artifact = (edgeopt.Artifact.open(out) if (out / "manifest.json").is_file()
                        else edgeopt.build(recipe, out, threads=THREADS, progress=False))
        except EdgeoptError as exc:
            print(f"  {name} {recipe.label}: {exc}", flush=True)
            rows.append(Row(name, export.backend, how, "", note=f"failed: {str(exc)[:120]}"))
            continue
        report = edgeopt.evaluate(str(out), data, reference=str(checkpoint))
        rows.append(Row(name, export.backend, how, str(out), report["metrics"]["map50"], report["metrics"]["map"],
                        report.get("fidelity", {}).get("box_recall"), artifact.size_bytes / 2**20))
        print(f"  {name} {recipe.label}: mAP@0.5 {report['metrics']['map50']:.2%}", flush=True)
    return rows


def time_all(rows: list[Row], data: str) -> None:
    """p50/p99 at batch 1 on the first 16 real test images (decoding and NMS included)."""
    from edgeopt.images import to_input
    from edgeopt.tasks.detection.data import load_detection

    test = load_detection(data, None).test
    config = MeasureConfig(threads=THREADS, timing=TimingConfig(warmup=10, min_iters=200, min_seconds=3.0))
    for row in rows:
        if not row.artifact:
            continue
        artifact = edgeopt.Artifact.open(row.artifact)
        timing = time_artifact(row.artifact, config, to_input(test.images[:16], artifact.input_spec))["batches"]["1"]
        row.p50_ms, row.p99_ms = timing["p50"], timing["p99"]
        print(f"  {row.model} {row.backend} {row.precision}: p50 {row.p50_ms:.2f} ms", flush=True)


def markdown(rows: list[Row], command: str, environment: dict, baseline_note: str) -> str:
    base = next(r for r in rows if r.model == "ssdlite" and r.backend == "eager")
    fp32_file = next((r for r in rows if r.model == "ssdlite" and r.backend == "onnxruntime" and r.precision == "FP32"), base)
    lines = [f"Measured {dt.date.today().isoformat()} on {environment_line(environment)}; {THREADS} threads, batch 1, "
             f"latency = network + decoding + NMS on real test images; mAP by faster-coco-eval on the 360 NEU-DET test "
             f"images. {baseline_note} Command: `{command}`", "",
             "| model | backend | precision | mAP@0.5 | Δ pts | mAP@0.5:0.95 | box recall vs FP32 | size MB | × smaller "
             "than ONNX FP32 | p50 ms | p99 ms | × eager FP32 | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.artifact:
            lines.append(f"| {r.model} | {r.backend} | {r.precision} | – | – | – | – | – | – | – | – | – | {r.note} |")
            continue
        recall = "–" if r.box_recall is None else f"{r.box_recall:.1%}"
        lines.append(f"| {r.model} | {r.backend} | {r.precision} | {r.map50:.2%} | {100 * (r.map50 - base.map50):+.2f} | "
                     f"{r.map:.2%} | {recall} | {r.size_mb:.2f} | {fp32_file.size_mb / r.size_mb:.1f}× | "
                     f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {base.p50_ms / r.p50_ms:.1f}× | {r.note} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "neu-det")
    parser.add_argument("--skip-prune", action="store_true")
    args = parser.parse_args()
    data = str(args.datasets_dir / "neu_det")
    if not Path(data).is_dir():
        print(f"NEU-DET not found at {data}; pass --datasets-dir", file=sys.stderr)
        return 2
    base = args.runs / "ssdlite-128.safetensors"
    if not base.is_file():
        edgeopt.train(data, ARCH, base, task="detection", resume=True, threads=THREADS, **TRAIN)
    summary = base.with_suffix(".json")
    baseline_note = ""
    if summary.is_file():
        trained = json.loads(summary.read_text())
        baseline_note = (f"Baseline: {ARCH} from scratch, {len(trained['history'])} epochs at 128 px "
                         f"(best epoch {trained['best_epoch']}).")
    rows = build_rows("ssdlite", base, data, args.runs / "artifacts", exports())
    if not args.skip_prune:
        pruned = args.runs / "prune50-kd.safetensors"
        if not pruned.is_file():
            print("== prune 50% + KD", flush=True)
            edgeopt.prune(str(base), data, pruned, PruneConfig(ratio=0.5, fine_tune=PRUNE_TUNE), threads=THREADS,
                          resume=True)
        rows += build_rows("ssdlite prune50+KD", pruned, data, args.runs / "artifacts",
                           [("FP32", ExportConfig("onnxruntime")),
                            ("INT8, head float", ExportConfig("onnxruntime", "int8", FLOAT_HEAD)),
                            ("INT8, head float", ExportConfig("openvino", "int8", FLOAT_HEAD))])
    time_all(rows, data)
    environment = collect_environment()
    command = "python benchmarks/detection.py" + (" --skip-prune" if args.skip_prune else "")
    body = markdown(rows, command, environment, baseline_note)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "detection.json").write_text(json.dumps({"rows": [asdict(r) for r in rows], "markdown": body,
                                                        "environment": environment}, indent=2) + "\n")
    write_section(START, END, body, "Detection on NEU-DET (`benchmarks/detection.py`)")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
