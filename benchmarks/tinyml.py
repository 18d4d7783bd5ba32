"""Down to the microcontroller: `edgeopt optimize` for a TFLM target on NEU-CLS-64, on two SRAM/flash budgets.

    .venv/bin/python benchmarks/tinyml.py                 # trains (or reuses) the baseline, runs (or resumes) both searches
    .venv/bin/python benchmarks/tinyml.py --table-only    # tabulate the existing search folders

The baseline is the ResNet-18 (1-channel stem) that benchmarks/compression.py trains on NEU-CLS-64
(runs/neu-resnet18.safetensors; trained here with the same settings when missing). Each search is
exactly this command line (``edgeopt.optimize`` with these settings):

    edgeopt optimize runs/neu-resnet18.safetensors --data ../shared/datasets/neu_cls_64.npz \\
        --device nano33-ble --priority accuracy --max-accuracy-drop 2 --resolutions 0.5 --budget 40m \\
        --out runs/tinyml/nano33-ble [--resume]

``nano33-ble`` is the 256 KB SRAM / 1 MB flash budget (Arduino Nano 33 BLE, nRF52840) and ``stm32h7``
the 512 KB / 2 MB one (STM32H743): a microcontroller device makes TFLM the only runtime and its SRAM and
flash hard goals. Every candidate's arena is TFLM's own (the smallest that runs, found by bisection in the
real TFLM interpreter), its flash the flatbuffer plus an estimate of the runtime; the static arena estimate
(tensor liveness, made before TFLM runs) is shown beside it. Latency on the part is an estimate from the
flatbuffer's MACs at an assumed int8 rate (the profile says which); top-1 is measured on the 360 test
images through the TFLM interpreter on this machine. The table replaces the tinyml section of
benchmarks/RESULTS.md; the plot goes to benchmarks/results/tinyml.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

import edgeopt
from edgeopt.core.artifact import Artifact
from edgeopt.measure.environment import collect as collect_environment
from edgeopt.report.console import environment_line, make_console
from edgeopt.report.progress import SearchPrinter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- tinyml:start -->", "<!-- tinyml:end -->"
BASELINE = ROOT / "runs" / "neu-resnet18.safetensors"
TRAIN = {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.05, "schedule": "onecycle"}  # as compression.py
DEVICES = ("nano33-ble", "stm32h7")  # 256 KB / 1 MB and 512 KB / 2 MB
MAX_DROP = 2.0
BUDGET = "40m"
SPACE = edgeopt.SearchSpace(resolutions=(0.5,))  # the guide's lower resolution: 64 -> 32 px; students: the task's micro ones


def run(datasets: Path, device: str, resume: bool) -> None:
    out = ROOT / "runs" / "tinyml" / device
    print(f"== optimize for {device}{' (resumed)' if resume else ''}", flush=True)
    edgeopt.optimize(str(BASELINE), str(datasets / "neu_cls_64.npz"), out, device=device, budget=BUDGET,
                     goals=edgeopt.Goals(max_drop=MAX_DROP, priority="accuracy"), space=SPACE,
                     resume=resume and (out / "search.json").is_file(),
                     on_event=SearchPrinter(make_console(own_stdout=True)))


def rows_of(device: str) -> tuple[dict, list[dict]]:
    """(results.json, one row per built candidate: label, top-1, drop, arena measured/estimated, flash, latency)."""
    out = ROOT / "runs" / "tinyml" / device
    results = json.loads((out / "results.json").read_text())
    rows = []
    for record in results["candidates"]:
        if record["status"] != "ok":
            continue
        compile_record = Artifact.open(out / record["artifact"], verify=False).manifest["compile"]
        m = record["measurement"]
        rows.append({"label": record["label"], "top1": 100 * m["metrics"]["top1"], "drop": record["drop_points"],
                     "arena_kb": compile_record["arena_bytes"] / 1024,
                     "estimate_kb": compile_record["arena_estimate_bytes"] / 1024,
                     "flatbuffer_kb": compile_record["flatbuffer_bytes"] / 1024, "flash_kb": m["flash_kb"],
                     "full_integer": compile_record["full_integer"], "mcu_ms": m["latency_ms"],
                     "low_ms": m["estimate_low_ms"], "high_ms": m["estimate_high_ms"],
                     "host_ms": m["host_ms"], "meets": not record["violations"],
                     "chosen": results["chosen"] is not None and results["chosen"]["key"] == record["key"],
                     "misses": "; ".join(v_text(v) for v in record["violations"])})
    return results, rows


def v_text(violation: dict) -> str:
    unit = {"max_sram_kb": " KB", "max_flash_kb": " KB", "max_drop": " points"}.get(violation["goal"], "")
    what = {"max_sram_kb": "arena", "max_flash_kb": "flash", "max_drop": "drop"}.get(violation["goal"], violation["goal"])
    return f"{what} {violation['value']:.0f}{unit} > {violation['bound']:g}{unit}" if unit == " KB" else \
        f"{what} {violation['value']:.2f}{unit} > {violation['bound']:g}{unit}"


def table(device: str) -> tuple[str, list[dict], dict]:
    results, rows = rows_of(device)
    goals, base = results["goals"], results["baseline"]
    lines = [f"### {results['device']['name']}: {goals['max_sram_kb']:g} KB SRAM, {goals['max_flash_kb']:g} KB flash",
             "", f"Baseline ResNet-18 FP32 (eager, this machine): top-1 {100 * base['metrics']['top1']:.2f}%; goal: at "
             f"most {goals['max_drop']:g} points lost, accuracy first. "
             + (f"**Chosen: {results['chosen']['label']}.**" if results["chosen"] else
                "**No candidate meets the goals.**"),
             "", "| candidate | top-1 % | Δ pts | arena KB (TFLM) | arena KB (static estimate) | est. error | flatbuffer KB "
                 "| flash KB | full int8 | ms on the part (est., range) | ms here (TFLM ref. kernels) | fits and meets |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["top1"]):
        error = 100 * (r["estimate_kb"] - r["arena_kb"]) / r["arena_kb"]
        lines.append(f"| {'**' + r['label'] + '**' if r['chosen'] else r['label']} | {r['top1']:.2f} | {-r['drop']:+.2f} "
                     f"| {r['arena_kb']:.1f} | {r['estimate_kb']:.1f} | {error:+.1f}% | {r['flatbuffer_kb']:.0f} "
                     f"| {r['flash_kb']:.0f} | {'yes' if r['full_integer'] else 'no'} | {r['mcu_ms']:.0f} "
                     f"({r['low_ms']:.0f}–{r['high_ms']:.0f}) | {r['host_ms']:.1f} | "
                     f"{'yes' if r['meets'] else 'no: ' + r['misses']} |")
    skipped = [rec for rec in results["candidates"] if rec["status"] == "skipped"]
    if skipped:
        lines += ["", "Skipped before training: " + "; ".join(f"{rec['label']} ({rec['reason']})" for rec in skipped)]
    return "\n".join(lines) + "\n", rows, results


def plot(tables: dict[str, tuple[list[dict], dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 5), squeeze=False)
    for axis, (device, (rows, results)) in zip(axes[0], tables.items()):
        goals = results["goals"]
        for chosen, marker, size in ((False, "o", 60), (True, "*", 220)):
            picked = [r for r in rows if r["chosen"] == chosen]
            points = axis.scatter([r["flash_kb"] for r in picked], [r["arena_kb"] for r in picked], s=size,
                                  c=[r["top1"] for r in picked], cmap="viridis", vmin=85, vmax=100, marker=marker,
                                  edgecolors="black", linewidths=0.5)
        figure.colorbar(points, ax=axis, label="top-1 % on the test split (★ chosen)")
        for r in rows:
            axis.annotate(f"{r['label'].split(' → ')[0]} ({r['top1']:.1f}%)", (r["flash_kb"], r["arena_kb"]), fontsize=7,
                          xytext=(4, 4), textcoords="offset points")
        axis.axvline(goals["max_flash_kb"], color="grey", linestyle="--")
        axis.axhline(goals["max_sram_kb"], color="grey", linestyle="--")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("flash KB (flatbuffer + TFLM runtime estimate)")
        axis.set_ylabel("tensor arena KB (measured by TFLM)")
        axis.set_title(f"{device}: budget {goals['max_sram_kb']:g} KB SRAM / {goals['max_flash_kb']:g} KB flash "
                       "(dashed)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--devices", default=",".join(DEVICES))
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="start the searches over instead of resuming them")
    args = parser.parse_args()
    devices = [d for d in args.devices.split(",") if d]
    if not args.table_only:
        if not (args.datasets_dir / "neu_cls_64.npz").is_file():
            print(f"NEU-CLS-64 not found under {args.datasets_dir}: pass --datasets-dir", file=sys.stderr)
            return 2
        if not BASELINE.is_file():
            edgeopt.train(str(args.datasets_dir / "neu_cls_64.npz"), "torchvision:resnet18", BASELINE, 30, **TRAIN,
                          resume=True, threads=2)
        for device in devices:
            run(args.datasets_dir, device, resume=not args.fresh)
    tables = {}
    body = [f"Measured {dt.date.today().isoformat()} on {environment_line(collect_environment())}. "
            "Reproduce: `.venv/bin/python benchmarks/tinyml.py`. Arena: TFLM's smallest working arena (its reference "
            "kernels, host build); flash: flatbuffer + TFLM runtime estimate (20 KB + 3 KB per operator kind); latency "
            "on the part: estimated from the flatbuffer's MACs at the profile's assumed int8 rate, not measured.", ""]
    for device in devices:
        text, rows, results = table(device)
        tables[device] = (rows, results)
        body += [text]
    plot(tables, HERE / "results" / "tinyml.png")
    body += ["![arena against flash per candidate](results/tinyml.png)", ""]
    write_section(START, END, "\n".join(body), title="Microcontrollers (TFLM) on NEU-CLS-64")
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
