"""Compression on real data: every technique on a ResNet-18 trained with `edgeopt train`.

    .venv/bin/python benchmarks/compression.py                      # NEU-CLS-64 and CIFAR-10
    .venv/bin/python benchmarks/compression.py --datasets neu

Reads the datasets from ../shared/datasets (or --datasets-dir); never copies them.
Per dataset: a ResNet-18 baseline trained by `edgeopt train` (1-channel stem for NEU);
INT8 PTQ on ONNX Runtime and OpenVINO; OpenVINO accuracy-aware PTQ (max drop 1 point). On
NEU also: QAT (NNCF, 3 epochs) for OpenVINO and ONNX Runtime, ExecuTorch INT8, prune 50% and 75% + KD from the baseline
(`edgeopt prune`), each then INT8 on OpenVINO and ONNX Runtime; distillation into
MobileNetV2 and ShuffleNetV2 and to a lower input resolution (`edgeopt distill`).

Every model is trained by the CLI with `--resume` and kept under runs/, so an interrupted
run continues. Accuracy is top-1 on the test split; latency is p50 at batch 1 with 2
threads, each artifact timed in a fresh worker process after all training is done. The
table replaces the one between the markers in benchmarks/RESULTS.md; a plot goes to
benchmarks/results/compression.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeopt import TimingConfig, export, load_model
from edgeopt.artifact import Artifact
from edgeopt.backends import open_session
from edgeopt.data import quantization_data
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.measure.accuracy import evaluate
from edgeopt.measure.bench import BenchConfig, measure_artifact
from edgeopt.measure.environment import collect as collect_environment
from edgeopt.measure.profile import count_flops_and_params
from edgeopt.report.console import environment_line

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- compression:start -->", "<!-- compression:end -->"
THREADS = 2
RECIPE = ["--optimizer", "adamw", "--lr", "0.002", "--weight-decay", "0.05", "--schedule", "onecycle"]
FINE_TUNE = ["--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.05", "--schedule", "onecycle"]
DATASETS = {
    "neu": {"file": "neu_cls_64.npz", "extra": [], "epochs": 30, "full": True},
    "cifar10": {"file": "cifar10.npz", "extra": ["cifar10_train_extra.npz"], "epochs": 15, "full": False},
}
# (name, edgeopt command after the baseline's path is known): trained students on NEU
STUDENTS = {
    "prune50-kd": lambda base: ["prune", base, "--ratio", "0.5", "--epochs", "15", *FINE_TUNE],
    "prune75-kd": lambda base: ["prune", base, "--ratio", "0.75", "--epochs", "15", *FINE_TUNE],
    "mobilenet_v2-kd": lambda base: ["distill", "torchvision:mobilenet_v2", "--teacher", base, "--epochs", "12", *RECIPE],
    "shufflenet_v2-kd": lambda base: ["distill", "torchvision:shufflenet_v2_x1_0", "--teacher", base, "--epochs", "12",
                                      *RECIPE],
    "resnet18@48-kd": lambda base: ["distill", base, "--teacher", base, "--input-size", "48", "--epochs", "10",
                                    *FINE_TUNE],
}


@dataclass
class Row:
    dataset: str
    model: str
    backend: str
    precision: str
    artifact: Path
    macs: int
    params: int
    top1: float = 0.0
    agreement: float = 0.0
    size_mb: float = 0.0
    p50_ms: float = 0.0
    note: str = ""


def edgeopt(*args: str) -> None:
    command = [sys.executable, "-m", "edgeopt", *args, "--resume", "--threads", str(THREADS)]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def train_models(name: str, folder: Path, runs: Path) -> dict[str, Path]:
    """The baseline and (NEU) its compressed students, trained by the CLI unless already on disk."""
    info, data = DATASETS[name], str(folder / DATASETS[name]["file"])
    base = runs / f"{name}-resnet18.safetensors"
    if not base.is_file():
        extra = [arg for e in info["extra"] for arg in ("--extra-train", str(folder / e))]
        edgeopt("train", data, "--arch", "torchvision:resnet18", "--epochs", str(info["epochs"]), *RECIPE, *extra,
                "--out", str(base))
    models = {"resnet18": base}
    for student, command in (STUDENTS.items() if info["full"] else []):
        path = runs / name / f"{student}.safetensors"
        if not path.is_file():
            edgeopt(*command(str(base)), "--data", data, "--out", str(path))
        models[student] = path
    return models


def variants(name: str, model_name: str, full: bool) -> list[tuple[str, str, str]]:
    """(backend, precision, how) for one model: the baseline gets every path, students the fast ones."""
    if model_name == "resnet18":
        rows = [("eager", "fp32", "plain"), ("onnxruntime", "fp32", "plain"), ("openvino", "fp32", "plain"),
                ("onnxruntime", "int8", "ptq"), ("openvino", "int8", "ptq"), ("openvino", "int8", "aware")]
        # QAT and ExecuTorch on NEU only: 3 QAT epochs over CIFAR's 14,000 images take too long here
        return rows + ([("openvino", "int8", "qat"), ("onnxruntime", "int8", "qat"), ("executorch", "int8", "ptq")]
                       if full else [])
    return [("eager", "fp32", "plain"), ("onnxruntime", "int8", "ptq"), ("openvino", "int8", "aware")]


def build(name: str, model_name: str, checkpoint: Path, splits, artifacts: Path, full: bool) -> list[Row]:
    model = load_model(str(checkpoint))
    cost = count_flops_and_params(model)
    calibration, _ = quantization_data(splits, 300, model)
    aware_calibration, validation = quantization_data(splits, 300, model, max_drop=1.0)
    qat_model = None
    rows = []
    for backend, precision, how in variants(name, model_name, full):
        out = artifacts / name / f"{model_name}-{backend}-{precision}-{how}"
        try:
            if (out / "manifest.json").is_file():
                artifact = Artifact.open(out)
            elif how == "qat":
                qat_model = qat_model or quantization_aware(model, splits, calibration, out.with_name(f"{model_name}-qat"))
                artifact = export(qat_model, backend, out, "int8", threads=THREADS, calibration=calibration)
            elif how == "aware":
                artifact = export(model, backend, out, "int8", threads=THREADS, calibration=aware_calibration,
                                  validation=validation)
            else:
                artifact = export(model, backend, out, precision, threads=THREADS,
                                  calibration=calibration if precision == "int8" else None)
        except EdgeoptError as exc:
            print(f"  {model_name} {backend} {precision} {how}: {exc}", flush=True)
            continue
        metrics = evaluate(open_session(artifact.path, threads=THREADS).run, splits.test, artifact.input_spec,
                           reference=model.reference())
        label = {"plain": "", "ptq": "PTQ", "aware": "PTQ, accuracy-aware ≤1 pt", "qat": "QAT 3 epochs"}[how]
        kept = len(artifact.manifest.get("compile", {}).get("fp32_layers", [])) if how == "aware" else 0
        rows.append(Row(name, model_name, backend, f"{precision.upper()} {label}".strip(), artifact.path,
                        cost["macs"], cost["params"], metrics["top1"], metrics["fidelity"]["top1_agreement"],
                        artifact.size_bytes / 2**20, note=f"{kept} layer(s) FP32" if kept else ""))
        print(f"  {model_name} {backend} {rows[-1].precision}: top-1 {metrics['top1']:.2%}", flush=True)
    return rows


def quantization_aware(model, splits, calibration, checkpoint: Path):
    from edgeopt.cli.quantize import quantization_aware_training
    from edgeopt.report.console import make_console

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return quantization_aware_training(model, splits, calibration, checkpoint, epochs=3, lr=1e-3, resume=True,
                                       console=make_console())


def time_all(rows: list[Row]) -> None:
    config = BenchConfig(threads=THREADS, timing=TimingConfig(warmup=10, min_iters=100, min_seconds=3.0))
    for row in rows:
        row.p50_ms = measure_artifact(row.artifact, config)["batches"]["1"]["p50"]
        print(f"  {row.dataset} {row.model} {row.backend} {row.precision}: p50 {row.p50_ms:.2f} ms", flush=True)


def markdown(rows: list[Row], command: str, environment: dict) -> str:
    lines = [f"Measured {dt.date.today().isoformat()} on {environment_line(environment)}; {THREADS} threads, "
             f"batch 1, top-1 on the full test split. Command: `{command}`", "",
             "| dataset | model | backend | precision | top-1 | drop (pts) | agreement | MMACs | M params | size MB "
             "| p50 ms | × eager FP32 | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r.dataset for r in rows):
        subset = [r for r in rows if r.dataset == dataset]
        base = next(r for r in subset if r.model == "resnet18" and r.backend == "eager")
        for r in subset:
            lines.append(f"| {r.dataset} | {r.model} | {r.backend} | {r.precision} | {r.top1:.2%} | "
                         f"{100 * (base.top1 - r.top1):+.2f} | {r.agreement:.2%} | {r.macs / 1e6:.1f} | "
                         f"{r.params / 1e6:.2f} | {r.size_mb:.2f} | {r.p50_ms:.2f} | {base.p50_ms / r.p50_ms:.1f}× | "
                         f"{r.note} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in rows))
    figure, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        subset = [r for r in rows if r.dataset == dataset]
        for model in dict.fromkeys(r.model for r in subset):
            points = [r for r in subset if r.model == model]
            axis.scatter([r.p50_ms for r in points], [100 * r.top1 for r in points], label=model,
                         s=[20 + 4 * r.size_mb for r in points], alpha=0.7)
        axis.set_xscale("log")
        axis.set(title=f"{dataset}: accuracy vs latency (marker size = file size)", xlabel="p50 latency, ms (log)",
                 ylabel="top-1 %")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="neu,cifar10")
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    args = parser.parse_args()
    if not args.datasets_dir.is_dir():
        print(f"datasets not found at {args.datasets_dir}; pass --datasets-dir", file=sys.stderr)
        return 2
    rows: list[Row] = []
    for name in args.datasets.split(","):
        info = DATASETS[name]
        models = train_models(name, args.datasets_dir, args.runs)
        splits = load_dataset(str(args.datasets_dir / info["file"]),
                              extra_train=[str(args.datasets_dir / e) for e in info["extra"]])
        for model_name, checkpoint in models.items():
            rows += build(name, model_name, checkpoint, splits, args.runs / "artifacts", info["full"])
    time_all(rows)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    environment = collect_environment()
    (results / "compression.json").write_text(json.dumps(
        [{**r.__dict__, "artifact": str(r.artifact)} for r in rows] + [{"environment": environment}], indent=2) + "\n")
    plot(rows, results / "compression.png")
    table = markdown(rows, "python benchmarks/compression.py " + " ".join(sys.argv[1:]), environment)
    text = (HERE / "RESULTS.md").read_text()
    if START not in text:
        text += f"\n## Compression on real data (`benchmarks/compression.py`)\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    (HERE / "RESULTS.md").write_text(f"{head}{START}\n{table}\n![accuracy vs latency](results/compression.png)\n"
                                     f"{END}{rest.partition(END)[2]}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
