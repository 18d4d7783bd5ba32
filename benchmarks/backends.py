"""Every backend side by side on four torchvision classifiers (224x224, batch 1).

Reproduces the backend table in benchmarks/RESULTS.md and docs/concepts.md:

    .venv/bin/python benchmarks/backends.py            # or: make bench

Random-init weights: latency does not depend on trained values. All backends run with
the same thread count, each timed in its own process (see edgeopt.pipeline.bench).
Writes benchmarks/results/backends.json, backends.md and backends.png, and replaces
the table between the markers in benchmarks/RESULTS.md.

INT8 (``--int8-model``, default the NEU-CLS ResNet-18 of benchmarks/compression.py, and its data): every
backend with static INT8, calibrated on 300 training images, verified against the FP32 original on 32 of
them (the parity check every export runs) and scored on the test split, then timed like the FP32 table:

    .venv/bin/python benchmarks/backends.py --skip-fp32   # only the INT8 table
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

from edgeopt import BenchConfig, QuantizationConfig, TimingConfig, bench, load_model
from edgeopt.backends import open_session
from edgeopt.core.artifact import Artifact
from edgeopt.measure.inference import outputs_on
from edgeopt.report.console import environment_line, print_bench

HERE = Path(__file__).resolve().parent
MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x1_0")
START, END = "<!-- backends:start -->", "<!-- backends:end -->"
INT8_START, INT8_END = "<!-- backends-int8:start -->", "<!-- backends-int8:end -->"
ROOT = HERE.parent
INT8_MODEL = ROOT / "runs" / "neu-resnet18.safetensors"  # trained by benchmarks/compression.py or tinyml.py
INT8_DATA = ROOT.parent / "shared" / "datasets" / "neu_cls_64.npz"


def _cell(row: dict) -> str:
    if row["status"] != "ok":
        return row["status"]
    return f"{row['measurement']['latency_ms']:.2f} ({row['speedup_vs_eager']:.2f}×)"


def markdown(reports: list[dict], command: str) -> str:
    backends = [r["backend"] for r in reports[0]["results"]]
    env = reports[0]["environment"]
    lines = [
        f"Measured {dt.date.today().isoformat()} on {environment_line(env)}; "
        f"{reports[0]['config']['threads']} threads, batch 1, 224x224, FP32. Command: `{command}`",
        "",
        "p50 latency in ms (speedup over eager PyTorch):",
        "",
        "| model | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for report in reports:
        lines.append(f"| {report['model'].removeprefix('torchvision:')} | " + " | ".join(_cell(r) for r in report["results"]) + " |")
    lines += ["", "Peak RSS of the measuring process in MB (its imports included) · parity max|Δ| of output scale:", "",
              "| model | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
    for report in reports:
        cells = [
            f"{r['measurement']['peak_rss_mb']:.0f} · {r['parity']['max_abs_diff']:.0e}" if r["status"] == "ok" else r["status"]
            for r in report["results"]
        ]
        lines.append(f"| {report['model'].removeprefix('torchvision:')} | " + " | ".join(cells) + " |")
    reasons = {r["backend"]: r["reason"] for rep in reports for r in rep["results"] if r["status"] != "ok"}
    lines += [""] + [f"- {name}: {reason}" for name, reason in reasons.items()]
    return "\n".join(lines) + "\n"


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    backends = [r["backend"] for r in reports[0]["results"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = [next((r["measurement"]["latency_ms"] for r in rep["results"] if r["backend"] == backend and r["status"] == "ok"), np.nan)
                  for rep in reports]
        ax.bar(np.arange(len(reports)) + i * width, values, width, label=backend)
    ax.set_xticks(np.arange(len(reports)) + width * (len(backends) - 1) / 2)
    ax.set_xticklabels([rep["model"].removeprefix("torchvision:") for rep in reports])
    ax.set_ylabel("p50 latency, ms (lower is better)")
    ax.set_title(f"batch 1, 224x224, {reports[0]['config']['threads']} threads · {reports[0]['environment']['cpu']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def int8_table(model_path: Path, data: Path, config: BenchConfig) -> str:
    """Every static-INT8 backend on a trained model: parity against FP32, test top-1, p50."""
    from edgeopt.tasks.classification.data import load_dataset

    model = load_model(str(model_path))
    splits = load_dataset(str(data))
    int8 = BenchConfig(threads=config.threads, timing=config.timing, precisions=("int8",))
    folder = ROOT / "runs" / "backends-int8"  # artifacts stay out of the repository
    report = bench(model, int8, calibrate=str(data), quantization=QuantizationConfig(calibration_samples=300),
                   artifacts_dir=folder, progress=lambda backend, stage: print(f"   {backend}: {stage}", flush=True))
    fp32 = outputs_on(model.reference(), splits.test, model.input_spec)[0].argmax(1)
    lines = [f"Measured {dt.date.today().isoformat()} on {environment_line(report.environment)}; "
             f"{report.config['threads']} threads, batch 1. Model: `runs/{model_path.name}` (ResNet-18, "
             f"{'x'.join(map(str, model.input_spec.shape[1:]))}), FP32 top-1 "
             f"{100 * (fp32 == splits.test.labels).mean():.2f}% on the {len(splits.test)} test images. Command: "
             "`python benchmarks/backends.py --skip-fp32`", "",
             "| backend | p50 ms | parity: top-1 agreement on 32 calibration images | test top-1 % | "
             "test agreement with FP32 | size MB |", "|---|---|---|---|---|---|"]
    for row in report.results:
        if row.status == "unavailable" and "not int8" in (row.reason or ""):
            continue  # a runtime without INT8 (eager, TorchScript, TensorRT's FP16 path)
        if row.status != "ok":
            lines.append(f"| {row.backend} | {row.status}: {row.reason} | | | | |")
            continue
        artifact = Artifact.open(folder / f"{row.backend}-int8")  # its own spec: a bounded batch for ExecuTorch
        predicted = outputs_on(open_session(artifact.path, threads=config.threads).run, splits.test,
                               artifact.input_spec)[0].argmax(1)
        lines.append(f"| {row.backend} | {row.measurement.latency_ms:.2f} | {row.parity['top1_agreement']:.3f} | "
                     f"{100 * (predicted == splits.test.labels).mean():.2f} | {(predicted == fp32).mean():.3f} | "
                     f"{row.measurement.size_mb:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--skip-fp32", action="store_true", help="only the INT8 table")
    parser.add_argument("--int8-model", type=Path, default=INT8_MODEL)
    parser.add_argument("--int8-data", type=Path, default=INT8_DATA)
    args = parser.parse_args()
    config = BenchConfig(threads=args.threads, timing=TimingConfig(warmup=10, min_iters=50, min_seconds=args.seconds))
    if args.int8_model.is_file() and args.int8_data.is_file():
        table = int8_table(args.int8_model, args.int8_data, config)
        write_section(INT8_START, INT8_END, table, title="INT8 backends on a trained model")
        print(table)
    else:
        print(f"INT8 table skipped: {args.int8_model} or {args.int8_data} is missing (benchmarks/compression.py trains "
              "the model)", flush=True)
    if args.skip_fp32:
        return 0
    reports = []
    for name in args.models.split(","):
        print(f"== {name}", flush=True)
        report = bench(load_model(f"torchvision:{name}"), config,
                       progress=lambda backend, stage: print(f"   {backend}: {stage}", flush=True))
        print_bench(report)
        reports.append(report.to_dict())
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "backends.json").write_text(json.dumps(reports, indent=2) + "\n")
    command = "python benchmarks/backends.py " + " ".join(sys.argv[1:])
    table = markdown(reports, command.strip())
    (out / "backends.md").write_text(table)
    plot(reports, out / "backends.png")
    write_section(START, END, table + "\n![p50 latency per backend](results/backends.png)\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
