"""The search keeps its budget, and accuracy-aware INT8 at a sane cost, on the highway detector (issue 20).

    .venv/bin/python benchmarks/search_budget.py                 # every part (about 20 min), then RESULTS.md
    .venv/bin/python benchmarks/search_budget.py --part aware    # ONNX Runtime accuracy-aware INT8 only (minutes)
    .venv/bin/python benchmarks/search_budget.py --part search   # the 12-minute optimize only
    .venv/bin/python benchmarks/search_budget.py --part tight    # the same with a 4-minute budget
    .venv/bin/python benchmarks/search_budget.py --table-only    # tabulate the saved figures

The model: the SSDlite the issue was filed with, trained by the command line as a user would
(about 2.5 h on 2 shared cores; never copied into the repository):

    edgeopt train ../shared/datasets/highway --task detection --arch edgeopt.models.detectors:ssdlite \\
        --image-size 256 --epochs 20 --out /work/runs/highway/ssdlite-256.safetensors

Part "aware": ONNX Runtime accuracy-aware INT8 of that detector (max drop 1.5 points of
mAP@0.5 on the held-out 20% of the training split), timed as the builder runs it inside a
search candidate (data already loaded); scored on the test split against eager FP32, with
plain INT8 beside it. Part "search": exactly what the issue ran, as a subprocess timed by the
wall clock (part "tight": the same with ``--budget 4m``, which ends in stage 1, where a runtime's
export cannot stop midway, so the search must not start what it cannot finish):

    edgeopt optimize MODEL --data ../shared/datasets/highway --max-accuracy-drop 1.5 --budget 12m --out OUT --force

Figures go to benchmarks/results/search_budget.json and the section of RESULTS.md between
its markers; the load on the machine (load averages and the busiest other processes) is
recorded with them, since the 2 cores are shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- search-budget:start -->", "<!-- search-budget:end -->"
FIGURES = HERE / "results" / "search_budget.json"
MAX_DROP = 1.5
# an allowance no variant can meet (INT8 2 points better than FP32 on the validation images), so that every
# step of accuracy-aware INT8 runs: the ranking and the whole bisection, its worst case
WORST_DROP = -2.0
BUDGET = "12m"
TIGHT = "4m"  # ends inside stage 1: a candidate must not be started past what the budget holds


def machine_load() -> dict:
    """Load averages and the five busiest processes other than this one (the cores are shared)."""
    top = subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    mine = {str(os.getpid()), str(os.getppid())}
    busy = [line.strip()[:160] for line in top.splitlines()[1:] if line.split()[0] not in mine][:5]
    return {"loadavg": list(os.getloadavg()), "busiest": busy, "at": dt.datetime.now().isoformat(timespec="seconds")}


# -- part 1: accuracy-aware INT8 on ONNX Runtime ------------------------------------------------
def aware_part(model: Path, data: str, out: Path) -> dict:
    from edgeopt import ExportConfig, QuantizationConfig, Recipe
    from edgeopt.backends import open_session
    from edgeopt.measure.inference import outputs_on
    from edgeopt.pipeline.builder import BuildContext, build
    from edgeopt.tasks import task_of

    load = machine_load()
    base = Recipe(model=str(model), data=data)
    context = BuildContext.create(base, out / "work", threads=2, show_progress=False)
    test, task = context.splits.test, context.task
    fp32 = task.score(outputs_on(context.baseline.reference(), test, context.baseline.input_spec), test)
    figures = {"model": str(model), "data": data, "max_drop": MAX_DROP, "test_images": len(test),
               "fp32": fp32, "load_before": load}
    for name, quantization in (("plain", QuantizationConfig()),
                               ("aware", QuantizationConfig(mode="aware", max_drop=MAX_DROP)),
                               ("aware_worst", QuantizationConfig(mode="aware", max_drop=WORST_DROP))):
        recipe = Recipe(model=str(model), data=data, export=ExportConfig("onnxruntime", "int8", quantization))
        started = time.monotonic()
        _, artifact = build(recipe, context, out / name, overwrite=True)
        seconds = time.monotonic() - started
        metrics = task_of(artifact).score(outputs_on(open_session(artifact.path, threads=2).run, test,
                                                  artifact.input_spec), test)
        main = task.main.name
        entry = {"build_s": seconds, "metrics": metrics,
                 "drop_points": task.main.drop_points(fp32[main], metrics[main]), "notes": artifact.manifest["notes"]}
        if quantization.mode == "aware":
            details, control = artifact.manifest["compile"], artifact.manifest["accuracy_control"]
            entry |= {"evaluations": details["evaluations"], "ranked_nodes": len(details["sensitivity_ranking"]),
                      "kept_in_fp32": list(details["fp32_layers"]), "seconds": details["seconds"],
                      "search": details["search"], "reached": details["reached"], "validation": control}
        figures[name] = entry
        print(f"{name}: {seconds:.1f} s, {main} {metrics[main]:.2%} ({-entry['drop_points']:+.2f} points)", flush=True)
    figures["load_after"] = machine_load()
    return figures


# -- part 2: the 12-minute search ------------------------------------------------------------------
def search_part(model: Path, data: str, out: Path, budget: str = BUDGET) -> dict:
    command = [str(ROOT / ".venv" / "bin" / "edgeopt"), "optimize", str(model), "--data", data,
               "--max-accuracy-drop", str(MAX_DROP), "--budget", budget, "--out", str(out), "--force"]
    load = machine_load()
    started = time.monotonic()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    results = json.loads((out / "results.json").read_text())
    candidates = [{"label": c["label"], "status": c["status"], "elapsed_s": c["elapsed_s"],
                   "finished_at_s": c.get("finished_at_s"), "reason": c.get("reason"),
                   "latency_ms": (c["measurement"] or {}).get("latency_ms"), "drop_points": c.get("drop_points")}
                  for c in results["candidates"]]
    eager = next((c for c in results["candidates"] if c["status"] == "ok" and c["label"] == "eager fp32"), None)
    chosen = results["chosen"]
    figures = {"command": " ".join(["edgeopt", *command[1:]]), "exit_code": proc.returncode, "wall_s": wall,
               "elapsed_s": results["elapsed_s"], "budget_s": results["budget_s"], "candidates": candidates,
               "not_tried": results["not_tried"], "load_before": load, "load_after": machine_load(),
               "environment": {k: results["environment"][k] for k in ("cpu", "usable_cpus", "isa_flags")}}
    if chosen:
        figures["chosen"] = {"label": chosen["label"], "latency_ms": chosen["measurement"]["latency_ms"],
                             "drop_points": chosen["drop_points"], "metrics": chosen["measurement"]["metrics"],
                             "speedup": eager["measurement"]["latency_ms"] / chosen["measurement"]["latency_ms"]
                             if eager else None}
    print(f"search: {wall / 60:.1f} min wall clock, {results['elapsed_s'] / 60:.1f} of {results['budget_s'] / 60:.0f} "
          f"min on the search's clock, exit {proc.returncode}", flush=True)
    return figures


# -- the RESULTS.md section ---------------------------------------------------------------------------
def _load(figures: dict) -> str:
    before, after = figures["load_before"]["loadavg"], figures["load_after"]["loadavg"]
    return f"load average {before[0]:.1f} before, {after[0]:.1f} after (1-minute)"


def _aware_row(name: str, e: dict) -> str:
    drop = e["validation"]["drop_points"] if "validation" in e else None
    reached = "" if drop is None else f"{-drop:+.2f} ({'reached' if e['reached'] else 'not reached'})"
    evaluations = f"{e['evaluations']} ({e['ranked_nodes']} nodes ranked)" if "evaluations" in e else "–"
    return (f"| {name} | {e['build_s']:.0f} | {e['metrics']['map50']:.2%} | {-e['drop_points']:+.2f} | {reached} | "
            f"{evaluations} |")


def aware_text(f: dict) -> list[str]:
    plain, aware, worst = f["plain"], f["aware"], f["aware_worst"]
    seconds = worst["seconds"]
    later = [step["seconds"] for step in worst["search"][1:]]
    lines = [
        "### ONNX Runtime accuracy-aware INT8 of the highway detector", "",
        f"| export | build s | mAP@0.5 (test, {f['test_images']} images) | Δ points (test) | Δ points on the "
        f"{aware['validation']['samples']} validation images | full evaluations |", "|---|---|---|---|---|---|",
        f"| eager FP32 (reference) | – | {f['fp32']['map50']:.2%} | 0.00 | – | – |",
        _aware_row("ONNX Runtime INT8, plain PTQ", plain),
        _aware_row(f"ONNX Runtime INT8 accuracy-aware, max drop {f['max_drop']:g}", aware),
        _aware_row(f"… worst case: max drop {WORST_DROP:g} (unreachable on purpose)", worst), "",
        f"With the issue's allowance ({f['max_drop']:g} points) plain INT8 of this detector already holds on the "
        f"validation images, so accuracy-aware INT8 stops after its first evaluation: **{aware['build_s']:.0f} s** "
        f"for the whole export. The worst case runs every step: **{worst['build_s']:.0f} s** for the export "
        f"({worst['build_s'] / 60:.1f} min), of which {seconds['first_variant']:.0f} s for the first variant "
        f"(the one calibration, a quantization, an evaluation), {seconds['ranking']:.0f} s for ranking "
        f"{worst['ranked_nodes']} nodes in one pass, and {worst['evaluations'] - 1} more variants of "
        f"{sum(later) / max(len(later), 1):.0f} s each (k = "
        + ", ".join(str(step["kept_in_float"]) for step in worst["search"])
        + f"); it says it could not reach the drop and keeps the best variant. The method it replaces calibrated, "
          f"quantized and evaluated the whole model once per node to rank them: {worst['ranked_nodes']} × about "
          f"{seconds['first_variant']:.0f} s ≈ {worst['ranked_nodes'] * seconds['first_variant'] / 60:.0f} min "
          f"before its walk down the ranking (22 min in the issue's run). {_load(f)}.", ""]
    return lines


def search_text(f: dict, title: str, before: bool = False) -> list[str]:
    budget = f"{f['budget_s'] / 60:.0f}-minute"
    lines = [f"### {title}", "", f"`{f['command']}`", "",
             f"**{f['wall_s'] / 60:.1f} min of wall clock** for the {budget} budget (the search's own clock: "
             f"{f['elapsed_s'] / 60:.1f} min; the rest is start-up, the winner's profile and the reports); exit "
             f"code {f['exit_code']}; {_load(f)}."
             + (" Before (the issue): 26 min (`elapsed_s` 1515 against 720), 21.9 of them inside one accuracy-aware "
                "candidate, and nothing after it was tried." if before else ""), ""]
    if f.get("chosen"):
        c = f["chosen"]
        speed = f", {c['speedup']:.1f}× eager" if c.get("speedup") else ""
        lines += [f"Chosen: **{c['label']}** — {c['latency_ms']:.2f} ms, mAP@0.5 {c['metrics']['map50']:.2%} "
                  f"({-c['drop_points']:+.2f} points){speed}.", ""]
    lines += ["| candidate | status | p50 ms | Δ points | its time s | search clock at its end, s |",
              "|---|---|---|---|---|---|"]
    for c in f["candidates"]:
        ms = f"{c['latency_ms']:.2f}" if c["latency_ms"] else ""
        drop = f"{-c['drop_points']:+.2f}" if c["drop_points"] is not None else ""
        status = c["status"] if c["status"] in ("ok", "stopped") else f"{c['status']}: {(c['reason'] or '')[:90]}"
        end = f"{c['finished_at_s']:.0f}" if c["finished_at_s"] is not None else ""
        lines.append(f"| {c['label']} | {status} | {ms} | {drop} | {c['elapsed_s']:.0f} | {end} |")
    ends = [c["finished_at_s"] for c in f["candidates"] if c["finished_at_s"] is not None]
    lines += ["", f"The last candidate ended at {max(ends):.0f} s of the {f['budget_s']:.0f}-s budget." if ends else ""]
    lines += [f"- not tried: {t['label']} — {t['reason']}" for t in f["not_tried"]]
    return lines + [""]


def markdown(figures: dict) -> str:
    lines = []
    if "aware" in figures:
        lines += aware_text(figures["aware"])
    if "search" in figures:
        lines += search_text(figures["search"], "`optimize --budget 12m` on the highway detector", True)
    if "tight" in figures:
        lines += search_text(figures["tight"], "The same with `--budget 4m`: nothing is started that cannot finish")
    env = figures.get("search", {}).get("environment")
    where = f" on {env['cpu']} ({env['usable_cpus']} CPUs)" if env else ""
    lines += [f"Measured {figures['date']}{where}, 2 threads. Command: `python benchmarks/search_budget.py`; figures "
              "in `benchmarks/results/search_budget.json` (with the busiest other processes at each start)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/work/runs/highway/ssdlite-256.safetensors"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "highway"))
    parser.add_argument("--out", type=Path, default=Path("/work/runs/highway"))
    parser.add_argument("--part", choices=("aware", "search", "tight", "all"), default="all")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    figures = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    if not args.table_only:
        if not args.model.is_file():
            print(f"needs {args.model}: train it with the command in this script's docstring", file=sys.stderr)
            return 2
        if args.part in ("aware", "all"):
            figures["aware"] = aware_part(args.model, args.data, args.out / "aware-int8")
        if args.part in ("search", "all"):
            figures["search"] = search_part(args.model, args.data, args.out / "optimize-12m")
        if args.part in ("tight", "all"):
            figures["tight"] = search_part(args.model, args.data, args.out / "optimize-4m", TIGHT)
        figures["date"] = dt.date.today().isoformat()
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    text = markdown(figures)
    print(text)
    write_section(START, END, text, "The search keeps its budget (`benchmarks/search_budget.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
