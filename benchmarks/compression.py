"""Compression on real data: every technique on a ResNet-18 trained by edgeopt, through the library.

    .venv/bin/python benchmarks/compression.py                      # NEU-CLS-64 and CIFAR-10
    .venv/bin/python benchmarks/compression.py --datasets neu

Reads the datasets from ../shared/datasets (or --datasets-dir); never copies them.
Per dataset: a ResNet-18 baseline trained by ``edgeopt.train`` (1-channel stem for NEU);
INT8 PTQ on ONNX Runtime and OpenVINO; OpenVINO accuracy-aware PTQ (max drop 1 point). On
NEU also: QAT (NNCF, 3 epochs) for OpenVINO and ONNX Runtime, ExecuTorch INT8, prune 50% and
75% + KD from the baseline (``edgeopt.prune``), each then INT8 on OpenVINO and ONNX Runtime;
distillation into MobileNetV2 and ShuffleNetV2 and to a lower input resolution (``edgeopt.distill``).

Every technique runs through the same recipe builder as ``edgeopt build`` and ``optimize``;
every artifact is built from a recipe (kept in its manifest). Models are kept under runs/,
so an interrupted run continues (training resumes from its last epoch). Accuracy is top-1
on the test split; latency is p50 at batch 1 with 2 threads, each artifact timed in a fresh
worker process after all training is done. Each dataset's table replaces its section
between the markers in benchmarks/RESULTS.md; a plot goes to benchmarks/results/compression.png.
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
from edgeopt import ExportConfig, FineTune, QuantizationConfig, Recipe, Step
from edgeopt.core.errors import EdgeoptError
from edgeopt.measure.environment import collect as collect_environment
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.process import MeasureConfig, time_artifact
from edgeopt.passes.distill import DistillConfig
from edgeopt.passes.prune import PruneConfig
from edgeopt.report.console import environment_line

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- compression:start -->", "<!-- compression:end -->"
THREADS = 2
TRAIN = {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.05, "schedule": "onecycle"}
FINE_TUNE = FineTune(epochs=15, lr=0.001)  # KD from the baseline (the pass default)
DATASETS = {
    "neu": {"file": "neu_cls_64.npz", "extra": [], "epochs": 30, "full": True},
    "cifar10": {"file": "cifar10.npz", "extra": ["cifar10_train_extra.npz"], "epochs": 15, "full": False},
}
# trained students on NEU: (name, how to make it from the baseline's path and the data)
# (resume=True: an interrupted run continues from its last epoch checkpoint)
STUDENTS = {
    "prune50-kd": lambda base, data, out: edgeopt.prune(base, data, out, PruneConfig(ratio=0.5, fine_tune=FINE_TUNE),
                                                        resume=True),
    "prune75-kd": lambda base, data, out: edgeopt.prune(base, data, out, PruneConfig(ratio=0.75, fine_tune=FINE_TUNE),
                                                        resume=True),
    "mobilenet_v2-kd": lambda base, data, out: edgeopt.distill(base, data, out, DistillConfig(
        student="torchvision:mobilenet_v2", fine_tune=FineTune(epochs=12, lr=0.002)), resume=True),
    "shufflenet_v2-kd": lambda base, data, out: edgeopt.distill(base, data, out, DistillConfig(
        student="torchvision:shufflenet_v2_x1_0", fine_tune=FineTune(epochs=12, lr=0.002)), resume=True),
    "resnet18@48-kd": lambda base, data, out: edgeopt.distill(base, data, out, DistillConfig(
        input_size=48, fine_tune=FineTune(epochs=10, lr=0.001)), resume=True),
}
STATIC, AWARE = QuantizationConfig(), QuantizationConfig(mode="aware", max_drop=1.0)


@dataclass
class Row:
    dataset: str
    model: str
    backend: str
    precision: str
    artifact: str
    macs: int
    params: int
    top1: float = 0.0
    agreement: float = 0.0
    size_mb: float = 0.0
    p50_ms: float = 0.0
    note: str = ""


def train_models(name: str, folder: Path, runs: Path) -> dict[str, Path]:
    """The baseline and (NEU) its compressed students, trained by the library unless already on disk."""
    info, data = DATASETS[name], str(folder / DATASETS[name]["file"])
    base = runs / f"{name}-resnet18.safetensors"
    if not base.is_file():
        edgeopt.train(data, "torchvision:resnet18", base, info["epochs"], **TRAIN, resume=True, threads=THREADS,
                      extra_train=[str(folder / e) for e in info["extra"]])
    models = {"resnet18": base}
    for student, make in (STUDENTS.items() if info["full"] else []):
        path = runs / name / f"{student}.safetensors"
        if not path.is_file():
            print(f"== {name}: {student}", flush=True)
            make(str(base), data, path)
        models[student] = path
    return models


def variants(model_name: str, full: bool) -> list[tuple[str, tuple[Step, ...], ExportConfig]]:
    """(how, steps, export) for one model: the baseline gets every path, students the fast ones."""
    plain = [("plain", (), ExportConfig("eager")), ("PTQ", (), ExportConfig("onnxruntime", "int8", STATIC)),
             ("PTQ, accuracy-aware ≤1 pt", (), ExportConfig("openvino", "int8", AWARE))]
    if model_name != "resnet18":
        return plain
    rows = [plain[0], ("plain", (), ExportConfig("onnxruntime")), ("plain", (), ExportConfig("openvino")),
            plain[1], ("PTQ", (), ExportConfig("openvino", "int8", STATIC)), plain[2]]
    if full:  # QAT and ExecuTorch on NEU only: 3 QAT epochs over CIFAR's 14,000 images take too long here
        qat = (Step.of("qat", fine_tune={"epochs": 3}),)
        rows += [("QAT 3 epochs", qat, ExportConfig(b, "int8", QuantizationConfig(mode="qat")))
                 for b in ("openvino", "onnxruntime")]
        rows.append(("PTQ", (), ExportConfig("executorch", "int8", STATIC)))
    return rows


def build(name: str, model_name: str, checkpoint: Path, data: str, artifacts: Path, full: bool) -> list[Row]:
    macs, params = _cost(edgeopt.load_model(str(checkpoint)))
    rows = []
    for how, steps, export in variants(model_name, full):
        recipe = Recipe(str(checkpoint), data, steps=steps, export=export)
        out = artifacts / name / f"{model_name}-{recipe.hash}"
        try:
            artifact = (edgeopt.Artifact.open(out) if (out / "manifest.json").is_file()
                        else edgeopt.build(recipe, out, threads=THREADS, progress=False))
        except EdgeoptError as exc:
            print(f"  {model_name} {recipe.label}: {exc}", flush=True)
            continue
        report = edgeopt.evaluate(str(out), data, reference=str(checkpoint))
        kept = len(artifact.manifest.get("compile", {}).get("fp32_layers", [])) if export.quantization else 0
        rows.append(Row(name, model_name, export.backend, f"{export.precision.upper()} {'' if how == 'plain' else how}".strip(),
                        str(out), macs, params, report["metrics"]["top1"], report["fidelity"]["top1_agreement"],
                        artifact.size_bytes / 2**20, note=f"{kept} layer(s) FP32" if kept else ""))
        print(f"  {model_name} {recipe.label}: top-1 {report['metrics']['top1']:.2%}", flush=True)
    return rows


def _cost(model) -> tuple[int, int]:
    from edgeopt.measure.profile import count_flops_and_params

    cost = count_flops_and_params(model)
    return cost["macs"], cost["params"]


def time_all(rows: list[Row]) -> None:
    config = MeasureConfig(threads=THREADS, timing=TimingConfig(warmup=10, min_iters=100, min_seconds=3.0))
    for row in rows:
        row.p50_ms = time_artifact(row.artifact, config)["batches"]["1"]["p50"]
        print(f"  {row.dataset} {row.model} {row.backend} {row.precision}: p50 {row.p50_ms:.2f} ms", flush=True)


def markdown(rows: list[Row], command: str, environment: dict) -> str:
    lines = [f"Measured {dt.date.today().isoformat()} on {environment_line(environment)}; {THREADS} threads, "
             f"batch 1, top-1 on the full test split. Command: `{command}`", "",
             "| dataset | model | backend | precision | top-1 | drop (pts) | agreement | MMACs | M params | size MB "
             "| p50 ms | × eager FP32 | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = next(r for r in rows if r.model == "resnet18" and r.backend == "eager")
    for r in rows:
        lines.append(f"| {r.dataset} | {r.model} | {r.backend} | {r.precision} | {r.top1:.2%} | "
                     f"{100 * (base.top1 - r.top1):+.2f} | {r.agreement:.2%} | {r.macs / 1e6:.1f} | "
                     f"{r.params / 1e6:.2f} | {r.size_mb:.2f} | {r.p50_ms:.2f} | {base.p50_ms / r.p50_ms:.1f}× | "
                     f"{r.note} |")
    return "\n".join(lines) + "\n"


def plot(tables: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(tables), figsize=(7 * len(tables), 5), squeeze=False)
    for axis, (dataset, rows) in zip(axes[0], tables.items()):
        for model in dict.fromkeys(r["model"] for r in rows):
            points = [r for r in rows if r["model"] == model]
            axis.scatter([r["p50_ms"] for r in points], [100 * r["top1"] for r in points], label=model,
                         s=[20 + 4 * r["size_mb"] for r in points], alpha=0.7)
        axis.set_xscale("log")
        axis.set(title=f"{dataset}: accuracy vs latency (marker size = file size)", xlabel="p50 latency, ms (log)",
                 ylabel="top-1 %")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_results(results: Path) -> str:
    """RESULTS.md's section from every dataset measured so far (each with its own date and machine)."""
    tables = {p.stem.removeprefix("compression-"): json.loads(p.read_text())
              for p in sorted(results.glob("compression-*.json"))}
    plot({name: t["rows"] for name, t in tables.items()}, results / "compression.png")
    body = "\n".join(t["markdown"] for t in tables.values())
    write_section(START, END, f"{body}\n![accuracy vs latency](results/compression.png)\n",
                  "Compression on real data (`benchmarks/compression.py`)")
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="neu,cifar10")
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    args = parser.parse_args()
    if not args.datasets_dir.is_dir():
        print(f"datasets not found at {args.datasets_dir}; pass --datasets-dir", file=sys.stderr)
        return 2
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    environment = collect_environment()
    for name in args.datasets.split(","):
        info = DATASETS[name]
        data = str(args.datasets_dir / info["file"])
        rows: list[Row] = []
        for model_name, checkpoint in train_models(name, args.datasets_dir, args.runs).items():
            rows += build(name, model_name, checkpoint, data, args.runs / "artifacts", info["full"])
        time_all(rows)
        command = f"python benchmarks/compression.py --datasets {name}"
        (results / f"compression-{name}.json").write_text(json.dumps(
            {"rows": [asdict(r) for r in rows], "markdown": markdown(rows, command, environment),
             "environment": environment}, indent=2) + "\n")
    print(write_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
