"""`edgeopt optimize` on NEU (classification and detection), through the library, and its table in RESULTS.md.

    .venv/bin/python benchmarks/optimize_neu.py                   # NEU-CLS: runs (or resumes) the search, tabulates
    .venv/bin/python benchmarks/optimize_neu.py --search neu-det  # NEU-DET: the SSDlite detector, by mAP@0.5
    .venv/bin/python benchmarks/optimize_neu.py --table-only      # tabulate an existing search folder

NEU-CLS: the ResNet-18 trained by benchmarks/compression.py (runs/neu-resnet18.safetensors);
exactly what this command line runs (``edgeopt.optimize`` with the same defaults):

    edgeopt optimize runs/neu-resnet18.safetensors --data ../shared/datasets/neu_cls_64.npz \
        --out runs/optimize-neu --max-accuracy-drop 1 --priority latency --budget 30m [--resume]

NEU-DET: the SSDlite trained by benchmarks/detection.py (runs/neu-det/ssdlite-128.safetensors):

    edgeopt optimize runs/neu-det/ssdlite-128.safetensors --data ../shared/datasets/neu_det \
        --out runs/neu-det/optimize --max-accuracy-drop 1.5 --priority latency --budget 40m [--resume]

The table compares, from that one run's results.json: eager FP32 (the baseline), INT8 at full
width, and the chosen artifact, all measured in the same search (batch 1, 2 threads, each in a
fresh worker process; a detector's latency includes decoding and NMS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

import edgeopt
from edgeopt.report.console import make_console
from edgeopt.report.progress import SearchPrinter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEARCHES = {
    "neu": {"baseline": ROOT / "runs" / "neu-resnet18.safetensors", "data": "neu_cls_64.npz",
            "out": ROOT / "runs" / "optimize-neu", "max_drop": 1.0, "budget": "30m", "section": "NEU-CLS-64",
            "trained_by": "benchmarks/compression.py --datasets neu"},
    "neu-det": {"baseline": ROOT / "runs" / "neu-det" / "ssdlite-128.safetensors", "data": "neu_det",
                "out": ROOT / "runs" / "neu-det" / "optimize", "max_drop": 1.5, "budget": "40m",
                "section": "NEU-DET (detection)", "trained_by": "benchmarks/detection.py"},
}


def run_search(search: dict, datasets: Path, resume: bool) -> None:
    print(f"optimize {search['baseline'].relative_to(ROOT)} on {search['data']} · latency first · at most "
          f"{search['max_drop']:g} points · {search['budget']}{' (resumed)' if resume else ''}", flush=True)
    edgeopt.optimize(str(search["baseline"]), str(datasets / search["data"]), search["out"],
                     goals=edgeopt.Goals(max_drop=search["max_drop"]), budget=search["budget"], resume=resume,
                     on_event=SearchPrinter(make_console(own_stdout=True)))


def full_width(records: list[dict], backend: str, mode: str | None) -> dict | None:
    return next((r for r in records if r["status"] == "ok" and r["recipe"]["export"]["backend"] == backend
                 and (r["recipe"]["export"].get("quantization") or {}).get("mode") == mode and not r["recipe"]["steps"]),
                None)


def _row(name: str, r: dict | None, eager: dict, metric: str) -> str:
    if r is None:
        return f"| {name} | – | – | – | – | – | – |"
    m = r["measurement"]
    return (f"| {name} | {m['metrics'][metric]:.2%} | {-r['drop_points']:+.2f} | {m['latency_ms']:.2f} | "
            f"{eager['measurement']['latency_ms'] / m['latency_ms']:.1f}× | {m['size_mb']:.2f} | {m['peak_rss_mb']:.0f} |")


def table(results: dict, name: str) -> str:
    records, chosen = results["candidates"], results["chosen"]
    metric, title = results["baseline"]["metric"], results["baseline"]["metric_title"]
    eager = full_width(records, "eager", None)
    lines = [f"| artifact | {title} | Δ points | p50 ms | × eager | size MB | peak MB |", "|---|---|---|---|---|---|---|",
             _row("eager FP32 (baseline)", eager, eager, metric),
             _row("OpenVINO NNCF INT8 PTQ, full width", full_width(records, "openvino", "static"), eager, metric),
             _row("ONNX Runtime INT8 PTQ, full width", full_width(records, "onnxruntime", "static"), eager, metric),
             _row("OpenVINO NNCF INT8 accuracy-aware, full width", full_width(records, "openvino", "aware"), eager, metric),
             _row(f"**chosen**: {chosen['label']}" if chosen else "chosen: none", chosen, eager, metric)]
    lines += ["", "Every candidate of the run (★ chosen; latency measured here):", "",
              f"| candidate | status | p50 ms | {title} | Δ points | size MB | peak MB | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    key = chosen["key"] if chosen else None
    ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: r["measurement"]["latency_ms"])
    for r in ok + [r for r in records if r["status"] != "ok"]:
        label = ("★ " if r["key"] == key else "") + r["label"]
        if r["status"] != "ok":
            lines.append(f"| {label} | {r['status']} | | | | | | {r.get('reason', '')} |")
            continue
        m = r["measurement"]
        verdict = "meets the goals" if not r["violations"] else "misses: " + "; ".join(
            _violation(v) for v in r["violations"])
        lines.append(f"| {label} | ok | {m['latency_ms']:.2f} | {m['metrics'][metric]:.2%} | {-r['drop_points']:+.2f} | "
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
                  f"Command: `python benchmarks/optimize_neu.py --search {name}`"]
    return "\n".join(lines + notes)


def _violation(v: dict) -> str:
    return edgeopt.search.Violation.from_dict(v).text


def write_results(text: str, name: str, section: str) -> None:
    write_section(f"<!-- optimize-{name}:start -->", f"<!-- optimize-{name}:end -->", f"{text}\n",
                  f"`edgeopt optimize` on {section} (`benchmarks/optimize_neu.py --search {name}`)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--search", choices=sorted(SEARCHES), default="neu")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    search = SEARCHES[args.search]
    if not args.table_only:
        if not (args.datasets_dir / search["data"]).exists() or not search["baseline"].is_file():
            print(f"needs {args.datasets_dir}/{search['data']} and {search['baseline']} ({search['trained_by']} "
                  f"trains it)", file=sys.stderr)
            return 2
        run_search(search, args.datasets_dir, resume=(search["out"] / "journal.jsonl").is_file())
    results = json.loads((search["out"] / "results.json").read_text())
    text = table(results, args.search)
    print(text)
    write_results(text, args.search, search["section"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
