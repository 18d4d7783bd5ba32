"""`edgeopt optimize` on NEU-CLS-64, through the library, and its table in RESULTS.md.

    .venv/bin/python benchmarks/optimize_neu.py              # runs (or resumes) the search, then tabulates
    .venv/bin/python benchmarks/optimize_neu.py --table-only # tabulate an existing runs/optimize-neu

The baseline is the ResNet-18 trained by benchmarks/compression.py (runs/neu-resnet18.safetensors).
The search is exactly what this command line runs (``edgeopt.optimize`` with the same defaults):

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
import sys
from pathlib import Path

import edgeopt
from edgeopt.report.console import make_console
from edgeopt.report.progress import SearchPrinter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- optimize-neu:start -->", "<!-- optimize-neu:end -->"
OUT = ROOT / "runs" / "optimize-neu"
BASELINE = ROOT / "runs" / "neu-resnet18.safetensors"


def run_search(datasets: Path, resume: bool) -> None:
    print(f"optimize {BASELINE.relative_to(ROOT)} on neu_cls_64.npz · latency first · at most 1 point of top-1 · "
          f"30 min{' (resumed)' if resume else ''}", flush=True)
    edgeopt.optimize(str(BASELINE), str(datasets / "neu_cls_64.npz"), OUT, goals=edgeopt.Goals(max_drop=1.0),
                     budget="30m", resume=resume, on_event=SearchPrinter(make_console(own_stdout=True)))


def full_width(records: list[dict], backend: str, mode: str | None) -> dict | None:
    return next((r for r in records if r["status"] == "ok" and r["recipe"]["export"]["backend"] == backend
                 and (r["recipe"]["export"].get("quantization") or {}).get("mode") == mode and not r["recipe"]["steps"]),
                None)


def _row(name: str, r: dict | None, eager: dict) -> str:
    if r is None:
        return f"| {name} | – | – | – | – | – | – |"
    m = r["measurement"]
    return (f"| {name} | {m['metrics']['top1']:.2%} | {-r['drop_points']:+.2f} | {m['latency_ms']:.2f} | "
            f"{eager['measurement']['latency_ms'] / m['latency_ms']:.1f}× | {m['size_mb']:.2f} | {m['peak_rss_mb']:.0f} |")


def table(results: dict) -> str:
    records, chosen = results["candidates"], results["chosen"]
    eager = full_width(records, "eager", None)
    lines = ["| artifact | top-1 | Δ points | p50 ms | × eager | size MB | peak MB |", "|---|---|---|---|---|---|---|",
             _row("eager FP32 (baseline)", eager, eager),
             _row("OpenVINO NNCF INT8 PTQ, full width", full_width(records, "openvino", "static"), eager),
             _row("OpenVINO NNCF INT8 accuracy-aware, full width", full_width(records, "openvino", "aware"), eager),
             _row(f"**chosen**: {chosen['label']}" if chosen else "chosen: none", chosen, eager)]
    lines += ["", "Every candidate of the run (★ chosen; latency measured here):", "",
              "| candidate | status | p50 ms | top-1 | Δ points | size MB | peak MB | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    key = chosen["key"] if chosen else None
    ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: r["measurement"]["latency_ms"])
    for r in ok + [r for r in records if r["status"] != "ok"]:
        name = ("★ " if r["key"] == key else "") + r["label"]
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']} | | | | | | {r.get('reason', '')} |")
            continue
        m = r["measurement"]
        verdict = "meets the goals" if not r["violations"] else "misses: " + "; ".join(
            _violation(v) for v in r["violations"])
        lines.append(f"| {name} | ok | {m['latency_ms']:.2f} | {m['metrics']['top1']:.2%} | {-r['drop_points']:+.2f} | "
                     f"{m['size_mb']:.2f} | {m['peak_rss_mb']:.0f} | {verdict} |")
    skipped = [r for r in records if r["status"] == "skipped"]
    env = results["environment"]
    notes = ["", f"{len(ok)} candidates measured, {len(skipped)} skipped after a latency probe, "
                 f"{len(results['not_tried'])} not tried; search time {results['elapsed_s'] / 60:.1f} of "
                 f"{results['budget_s'] / 60:.0f} min."]
    notes += [f"- skipped: {r['label']} — {r['reason']}" for r in skipped]
    notes += [f"- not tried: {r['label']} — {r['reason']}" for r in results["not_tried"]]
    notes += ["", f"Measured {dt.date.today().isoformat()} on {env['cpu']} ({env['usable_cpus']} CPUs, "
                  f"{', '.join(env['isa_flags'])}), {results['device']['threads_here']} threads, batch 1. "
                  "Command: `python benchmarks/optimize_neu.py`"]
    return "\n".join(lines + notes)


def _violation(v: dict) -> str:
    return edgeopt.search.Violation.from_dict(v).text


def write_results(text: str) -> None:
    path = HERE / "RESULTS.md"
    content = path.read_text()
    if START not in content:
        content += f"\n## `edgeopt optimize` on NEU-CLS-64 (`benchmarks/optimize_neu.py`)\n\n{START}\n{END}\n"
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
        run_search(args.datasets_dir, resume=(OUT / "journal.jsonl").is_file())
    results = json.loads((OUT / "results.json").read_text())
    text = table(results)
    print(text)
    write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
