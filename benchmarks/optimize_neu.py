"""`edgeopt optimize` on NEU-CLS-64: the issue-4 run, and its table in RESULTS.md.

    .venv/bin/python benchmarks/optimize_neu.py              # runs (or resumes) the search, then tabulates
    .venv/bin/python benchmarks/optimize_neu.py --table-only # tabulate an existing runs/optimize-neu

The baseline is the ResNet-18 trained by `edgeopt train` in benchmarks/compression.py
(runs/neu-resnet18.safetensors). The search command is exactly:

    edgeopt optimize runs/neu-resnet18.safetensors --data ../shared/datasets/neu_cls_64.npz \
        --out runs/optimize-neu --max-accuracy-drop 1 --priority latency --budget 30m [--resume]

The table compares, from that one run's results.json: eager FP32 (the baseline), NNCF
INT8 on OpenVINO at full width (plain PTQ and accuracy-aware), and the chosen artifact,
all measured in the same search (batch 1, 2 threads, each in a fresh worker process).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from edgeopt.report.search import points

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- optimize-neu:start -->", "<!-- optimize-neu:end -->"
OUT = ROOT / "runs" / "optimize-neu"
BASELINE = ROOT / "runs" / "neu-resnet18.safetensors"


def run_search(datasets: Path, resume: bool) -> int:
    command = [sys.executable, "-m", "edgeopt", "optimize", str(BASELINE.relative_to(ROOT)), "--data",
               str(datasets / "neu_cls_64.npz"), "--out", str(OUT.relative_to(ROOT)), "--max-accuracy-drop", "1",
               "--priority", "latency", "--budget", "30m"]
    command += ["--resume"] if resume else []
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def full_width(records: list[dict], backend: str, quantization: str) -> dict | None:
    return next((r for r in records if r["status"] == "ok" and r["backend"] == backend
                 and r["quantization"] == quantization and not r["recipe"]["steps"]), None)


def table(results: dict) -> str:
    records = results["candidates"]
    eager = full_width(records, "eager", "none")
    rows = [("eager FP32 (baseline)", eager), ("OpenVINO NNCF INT8 PTQ, full width", full_width(records, "openvino", "ptq")),
            ("OpenVINO NNCF INT8 accuracy-aware, full width", full_width(records, "openvino", "aware")),
            (f"**chosen**: {results['chosen']['label']}" if results["chosen"] else "chosen: none", results["chosen"])]
    lines = ["| artifact | top-1 | Δ points | p50 ms | × eager | size MB | peak MB |", "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        if r is None:
            lines.append(f"| {name} | – | – | – | – | – | – |")
            continue
        lines.append(f"| {name} | {r['top1']:.2%} | {points(r)} | {r['latency_ms']:.2f} | "
                     f"{eager['latency_ms'] / r['latency_ms']:.1f}× | {r['size_mb']:.2f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "Every candidate of the run (★ chosen; latency measured here):", "",
              "| candidate | status | p50 ms | top-1 | Δ points | size MB | peak MB | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    chosen = results["chosen"]["key"] if results["chosen"] else None
    for r in sorted(records, key=lambda r: (r["status"] != "ok", r.get("latency_ms") or 0.0)):
        name = ("★ " if r["key"] == chosen else "") + r["label"]
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']} | | | | | | {r.get('reason', '')} |")
            continue
        verdict = "meets the goals" if not r["violations"] else "misses " + "; ".join(r["violations"])
        lines.append(f"| {name} | ok | {r['latency_ms']:.2f} | {r['top1']:.2%} | {points(r)} | {r['size_mb']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {verdict} |")
    measured = sum(r["status"] == "ok" for r in records)
    skipped = [r for r in records if r["status"] == "skipped"]
    env = results["environment"]
    notes = [
        "",
        f"{measured} candidates measured, {len(skipped)} skipped after a latency probe, "
        f"{len(results['not_tried'])} not tried; search time {results['elapsed_s'] / 60:.1f} of "
        f"{results['budget_s'] / 60:.0f} min.",
    ]
    notes += [f"- skipped: {r['label']} — {r['reason']}" for r in skipped]
    notes += [f"- not tried: {r['label']} — {r['reason']}" for r in results["not_tried"]]
    notes += ["", f"Measured {dt.date.today().isoformat()} on {env['cpu']} ({env['usable_cpus']} CPUs, "
                  f"{', '.join(env['isa_flags'])}), {results['device']['threads_here']} threads, batch 1."]
    return "\n".join(lines + notes)


def write_results(text: str) -> None:
    path = HERE / "RESULTS.md"
    content = path.read_text()
    if START not in content:
        content += (f"\n## `edgeopt optimize` on NEU-CLS-64 (`benchmarks/optimize_neu.py`)\n\n{START}\n{END}\n")
    head, _, rest = content.partition(START)
    path.write_text(f"{head}{START}\n{text}\n{END}{rest.partition(END)[2]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        if not (args.datasets_dir / "neu_cls_64.npz").is_file() or not BASELINE.is_file():
            print(f"needs {args.datasets_dir}/neu_cls_64.npz and {BASELINE} (benchmarks/compression.py --datasets neu "
                  f"trains it)", file=sys.stderr)
            return 2
        code = run_search(args.datasets_dir, resume=(OUT / "journal.jsonl").is_file())
        if code not in (0, 3):
            return code
    results = json.loads((OUT / "results.json").read_text())
    text = table(results)
    print(text)
    write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
