"""Compression on real data: a baseline trained with `edgeopt train`, then INT8 per backend.

    .venv/bin/python benchmarks/compression.py                      # NEU-CLS-64
    .venv/bin/python benchmarks/compression.py --datasets neu,cifar10

Reads the datasets from ../shared/datasets (or --datasets-dir); never copies them.
Trains (or resumes) a ResNet-18 baseline per dataset under runs/, benchmarks eager FP32
against every backend at FP32 and INT8 (latency in fresh processes, batch 1), evaluates
each artifact on the test split, and replaces the table between the markers in
benchmarks/RESULTS.md.

So far this covers the baseline and plain INT8 PTQ; accuracy-aware PTQ, QAT, pruning,
distillation and resolution are to be added as they are built.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from edgeopt import BenchConfig, TimingConfig, bench, export, load_model
from edgeopt.backends import open_session
from edgeopt.backends.base import Validation
from edgeopt.data import load_dataset, to_input
from edgeopt.measure.accuracy import evaluate
from edgeopt.measure.bench import measure_artifact
from edgeopt.report.console import environment_line, print_bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- compression:start -->", "<!-- compression:end -->"
DATASETS = {
    "neu": {"file": "neu_cls_64.npz", "extra": [], "epochs": 12},
    "cifar10": {"file": "cifar10.npz", "extra": ["cifar10_train_extra.npz"], "epochs": 15},
}


def train_baseline(name: str, folder: Path, out: Path) -> Path:
    """Train ResNet-18 with the edgeopt CLI (resuming an interrupted run)."""
    info = DATASETS[name]
    checkpoint = out / f"{name}-resnet18.safetensors"
    if checkpoint.is_file():
        return checkpoint
    command = [sys.executable, "-m", "edgeopt", "train", str(folder / info["file"]), "--arch", "torchvision:resnet18",
               "--epochs", str(info["epochs"]), "--out", str(checkpoint), "--resume", "--threads", "2"]
    for extra in info["extra"]:
        command += ["--extra-train", str(folder / extra)]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    return checkpoint


def measure(name: str, folder: Path, checkpoint: Path, artifacts: Path) -> list[dict]:
    info = DATASETS[name]
    model = load_model(str(checkpoint))
    splits = load_dataset(str(folder / info["file"]), extra_train=[str(folder / e) for e in info["extra"]])
    calibration = to_input(splits.train.calibration(300).images, model.input_spec)
    config = BenchConfig(backends=("eager", "onnxruntime", "openvino"), precisions=("fp32", "int8"), threads=2,
                         timing=TimingConfig(warmup=10, min_iters=100, min_seconds=3.0))
    report = bench(model, config, artifacts_dir=artifacts / name, calibration=calibration)
    print_bench(report)
    rows = []
    for result in report.results:
        row = {"dataset": name, "backend": result.backend, "precision": result.precision, "status": result.status,
               "reason": result.reason, "p50_ms": (result.latency_ms or {}).get("p50"),
               "speedup": result.speedup_vs_eager, "size_mb": result.size_mb, "environment": report.environment}
        if result.status == "ok":
            session = open_session(artifacts / name / f"{result.backend}-{result.precision}", threads=2)
            metrics = evaluate(session.run, splits.test, model.input_spec, reference=model.reference())
            row.update(top1=metrics["top1"], agreement=metrics["fidelity"]["top1_agreement"])
        rows.append(row)
    rows.append(accuracy_aware(name, model, splits, config, artifacts, report.environment))
    baseline = next(r for r in rows if r["backend"] == "eager")
    for row in rows:
        if "top1" in row:
            row["drop_points"] = 100 * (baseline["top1"] - row["top1"])
            row["speedup"] = baseline["p50_ms"] / row["p50_ms"]
    return rows


def accuracy_aware(name: str, model, splits, config: BenchConfig, artifacts: Path, environment: dict) -> dict:
    """OpenVINO INT8 with NNCF accuracy control (max drop 1 point on a held-out 20% of train)."""
    rest, held_out = splits.train.split(0.2, seed=0)
    validation = Validation(to_input(held_out.images, model.input_spec), held_out.labels, max_drop=1.0)
    calibration = to_input(rest.calibration(300).images, model.input_spec)
    artifact = export(model, "openvino", artifacts / name / "openvino-int8-aware", precision="int8", threads=2,
                      overwrite=True, calibration=calibration, validation=validation)
    timing = measure_artifact(artifact.path, config)["batches"]["1"]
    metrics = evaluate(open_session(artifact.path, threads=2).run, splits.test, model.input_spec, reference=model.reference())
    return {"dataset": name, "backend": "openvino", "precision": "int8 (accuracy-aware, ≤1 pt)", "status": "ok",
            "reason": None, "p50_ms": timing["p50"], "size_mb": artifact.size_bytes / 2**20,
            "top1": metrics["top1"], "agreement": metrics["fidelity"]["top1_agreement"], "environment": environment,
            "fp32_layers": len(artifact.manifest["compile"].get("fp32_layers", []))}


def markdown(rows: list[dict], command: str) -> str:
    lines = [f"Measured {dt.date.today().isoformat()} on {environment_line(rows[0]['environment'])}; "
             f"2 threads, batch 1. Command: `{command}`", "",
             "| dataset | model | backend | precision | top-1 | drop (points) | agreement with FP32 | size MB | p50 ms | × eager FP32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['dataset']} | resnet18 | {r['backend']} | {r['precision']} | {r['status']}: {r['reason']} |||||")
            continue
        lines.append(f"| {r['dataset']} | resnet18 | {r['backend']} | {r['precision']} | {r['top1']:.2%} | "
                     f"{r['drop_points']:.2f} | {r['agreement']:.2%} | {r['size_mb']:.2f} | {r['p50_ms']:.2f} | "
                     f"{r['speedup']:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="neu")
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    args = parser.parse_args()
    if not args.datasets_dir.is_dir():
        print(f"datasets not found at {args.datasets_dir}; pass --datasets-dir", file=sys.stderr)
        return 2
    rows = []
    for name in args.datasets.split(","):
        checkpoint = train_baseline(name, args.datasets_dir, args.runs)
        rows += measure(name, args.datasets_dir, checkpoint, args.runs / "artifacts")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "compression.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows, "python benchmarks/compression.py " + " ".join(sys.argv[1:]))
    text = (HERE / "RESULTS.md").read_text()
    if START not in text:
        text += f"\n## Compression on real data (`benchmarks/compression.py`)\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    (HERE / "RESULTS.md").write_text(f"{head}{START}\n{table}{END}{rest.partition(END)[2]}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
