"""Federated fine-tuning on NEU-CLS: sites with label-skewed data, against pooling it and against each site alone.

    .venv/bin/python benchmarks/federated.py            # about 90 minutes on 2 cores
    .venv/bin/python benchmarks/federated.py --no-iid   # about 67 (48 with --no-shifted too)
    .venv/bin/python benchmarks/federated.py --sites 4 --rounds 10 --local-epochs 1 --batch-size 16 --lr 3e-4

The setting: a ResNet-18 first trained on a small "lab" set (10% of NEU-CLS-64's training split, every class),
then fine-tuned where the images are: the other 90% is split across ``--sites`` plants by a Dirichlet(α = 0.3)
draw over the six defect classes, so each plant sees mostly two or three kinds of defect. Every arm starts from
the lab model and trains the same total epochs with edgeopt's one fine-tune (AdamW, the site client's settings),
its learning rate (``--lr``, 3e-4) following one cosine over those epochs (a federation's: over its rounds,
constant within one):

- **centralized**: the plants' images pooled on one machine (what federation avoids), ``rounds × local epochs``,
  at ``--lr`` and at each of ``--central-lrs`` (1e-3): the best of them is the reference the federations are
  held to, so a learning rate that suits federation cannot flatter it;
- **each site alone**: a plant fine-tunes on its own images only (mean over plants);
- **FedAvg** and **FedProx** (μ = 0.1): a Flower SuperLink and one SuperNode per plant, each a separate process
  talking over 127.0.0.1, ``rounds`` rounds of ``local epochs``, the sites measuring each aggregate's BatchNorm
  statistics (edgeopt's default); bytes per round and wall time from the run's history;
- **FedProx on IID sites** (a diagnostic, ``--no-iid`` does not run it): the same images dealt to the same number of
  sites at random, with no label skew: what federating costs against pooling, apart from the skew.

All arms are scored on the common NEU-CLS test split (360 images). Then the better federated model and the
reference centralized one are each built into a static INT8 artifact calibrated on the lab set (``--int8-backend``:
ONNX Runtime by default; OpenVINO with NNCF's accuracy control, at most 1 point on the lab set; verified as every
artifact is) and scored again. A second federation shifts one plant's images (darker and blurred: a camera
changed) and compares that plant's own accuracy, on test images shifted the same way, federated against alone,
and the federated model once the plant has put its own BatchNorm statistics in (``edgeopt federate adapt``).

Derived data (the lab set, the plants' .npz files) goes under runs/federated/, never into the repository.
Results: benchmarks/results/federated.json, a plot (accuracy per round), and the marked section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

import edgeopt
from edgeopt.federated.client_app import fine_tune_at_site
from edgeopt.federated.coordinator import coordinate
from edgeopt.federated.processes import Address, free_port, start_supernode
from edgeopt.federated.settings import FederationSettings, SiteSettings
from edgeopt.measure.environment import collect as collect_environment
from edgeopt.report.console import environment_line

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- federated:start -->", "<!-- federated:end -->"
ALPHA, LAB_SHARE, MIN_SITE = 0.3, 0.1, 40
LAB_EPOCHS = 10
LR = 3e-4  # every arm's (federations on label-skewed sites did better with it than at 1e-3 in trial runs)
INT8_LABELS = {"onnxruntime": "ONNX Runtime static INT8, calibrated on the lab set",
               "openvino": "OpenVINO INT8 with accuracy control, max drop 1 point, on the lab set"}
INT8_QUANTIZATION = {"onnxruntime": edgeopt.QuantizationConfig(),
                     "openvino": edgeopt.QuantizationConfig(mode="aware", max_drop=1.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "federated")
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--central-lrs", type=float, nargs="*", default=[1e-3],
                        help="more learning rates for the centralized arm: the reference is the best of them all")
    parser.add_argument("--int8-backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    parser.add_argument("--batch-size", type=int, default=16)  # a site's few hundred images still make steps
    parser.add_argument("--mu", type=float, default=0.1, help="FedProx's μ (its paper tunes 0.001 to 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shifted", dest="shifted", action="store_false",
                        help="leave out the second federation (one site's camera changed)")
    parser.add_argument("--no-iid", dest="iid", action="store_false",
                        help="do not run the federation on IID sites (the diagnostic without label skew); "
                             "one already in the runs folder is still reported")
    args = parser.parse_args()
    source = args.datasets_dir / "neu_cls_64.npz"
    if not source.is_file():
        print(f"NEU-CLS is not at {source}; pass --datasets-dir", file=sys.stderr)
        return 2
    args.runs.mkdir(parents=True, exist_ok=True)
    files = write_partitions(source, args.runs / "data", args.sites, args.seed)
    results_path = args.runs / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    settings = {name: getattr(args, name) for name in ("sites", "rounds", "local_epochs", "lr", "batch_size", "mu",
                                                         "seed")}
    if results and results.get("settings") != settings:  # cached arms of other settings would be mixed in
        print(f"{results_path} holds arms run with {results.get('settings', 'unrecorded settings')}, not {settings}: "
              "pass another --runs folder (or delete it) to run these settings", file=sys.stderr)
        return 2
    results["settings"] = settings

    def arm(name: str, make) -> dict:  # each arm once: an interrupted run continues with the next
        if name not in results:
            started = time.perf_counter()
            results[name] = {**make(), "wall_s": round(time.perf_counter() - started, 1),
                             "date": dt.date.today().isoformat()}
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{name}: {json.dumps(results[name])[:300]}", flush=True)
        return results[name]

    lab_model = args.runs / "lab-resnet18.safetensors"
    arm("lab", lambda: train_lab(files["lab"], lab_model, args.seed))
    epochs = args.rounds * args.local_epochs
    tune = dataclasses.replace(FederationSettings("-", "-").fine_tune(), lr=args.lr, batch_size=args.batch_size,
                               schedule="cosine")  # one cosine over all the epochs, as a federation's over its rounds
    arm("centralized", lambda: fine_tune_alone(lab_model, files["pooled"], files["lab"], tune, epochs,
                                               args.runs / "centralized.safetensors", args.seed))
    asked = ["centralized"]
    for lr in sorted(set(args.central_lrs) - {args.lr}):  # the reference is not held back by our learning rate
        asked.append(f"centralized-lr{lr:g}")
        arm(asked[-1], lambda lr=lr: fine_tune_alone(
            lab_model, files["pooled"], files["lab"], dataclasses.replace(tune, lr=lr), epochs,
            args.runs / f"centralized-lr{lr:g}.safetensors", args.seed))
    for index, site in enumerate(files["sites"]):
        arm(f"site{index}-alone", lambda site=site, index=index: fine_tune_alone(
            lab_model, site, files["lab"], tune, epochs, args.runs / f"site{index}-alone.safetensors", args.seed))
    for strategy in ("fedavg", "fedprox"):
        arm(strategy, lambda strategy=strategy: federate(lab_model, files["sites"], files["lab"], strategy, args,
                                                         args.runs / strategy))
    if args.iid:  # the skew-free diagnostic: FedProx, the better federation of the trial runs
        arm("fedprox-iid", lambda: federate(lab_model, files["iid"], files["lab"], "fedprox", args,
                                            args.runs / "fedprox-iid"))
    best = max(("fedavg", "fedprox"), key=lambda s: results[s]["top1"])
    reference = max(asked, key=lambda name: results[name]["top1"])
    sources = {"int8-federated": results[best]["checkpoint"], "int8-centralized": results[reference]["checkpoint"]}
    for name, checkpoint in sources.items():
        built = results.get(name, {})
        if name in results and (built.get("backend"), built.get("source")) != (args.int8_backend, checkpoint):
            del results[name]  # built again for another backend or another model
        arm(name, lambda name=name, checkpoint=checkpoint: compress(Path(checkpoint), files["lab"], args.int8_backend,
                                                                    args.runs / name))
    if args.shifted:
        shifted_sites = [files["shifted"], *files["sites"][1:]]
        arm("shifted-fedavg", lambda: federate(lab_model, shifted_sites, files["lab"], "fedavg", args,
                                               args.runs / "shifted-fedavg", extra_test=files["shifted_test"]))
        arm("shifted-alone", lambda: fine_tune_alone(lab_model, files["shifted"], files["shifted_test"], tune,
                                                     epochs, args.runs / "shifted-alone.safetensors", args.seed))
        arm("shifted-adapted", lambda: adapt_at_site(Path(results["shifted-fedavg"]["checkpoint"]), files["shifted"],
                                                     files["shifted_test"], args.runs / "shifted-adapted.safetensors"))
    details = {"date": dt.date.today().isoformat(), "environment": collect_environment(), "sites": args.sites,
               "rounds": args.rounds, "local_epochs": args.local_epochs, "alpha": ALPHA, "lr": args.lr,
               "batch_size": args.batch_size, "mu": args.mu,
               "partition": files["counts"], "best": best, "reference": reference, "central_arms": asked,
               "int8_backend": args.int8_backend}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "federated.json").write_text(json.dumps({"results": results, **details}, indent=2))
    plot(results, details, out / "federated.png")
    text = markdown(results, details)
    write_section(START, END, text, "Federated fine-tuning on NEU-CLS (`benchmarks/federated.py`)")
    print(text)
    return 0


# -- the data: a lab set, label-skewed plants, one shifted plant ---------------------------------------------
def dirichlet_partition(labels: np.ndarray, sites: int, alpha: float, seed: int, minimum: int) -> list[np.ndarray]:
    """Indices per site: each class's images dealt to the sites in Dirichlet(α) proportions (redrawn until
    every site holds at least ``minimum`` images): the usual label-skew split of the FL literature."""
    rng = np.random.default_rng(seed)
    while True:
        parts: list[list[int]] = [[] for _ in range(sites)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(rng.dirichlet([alpha] * sites)) * len(members)).astype(int)[:-1]
            for site, chunk in enumerate(np.split(members, cuts)):
                parts[site] += chunk.tolist()
        if min(len(p) for p in parts) >= minimum:
            return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]


def shift(images: np.ndarray) -> np.ndarray:
    """A plant whose camera changed: darker (×0.6) and blurred (5×5 Gaussian, OpenCV)."""
    import cv2

    out = np.stack([cv2.GaussianBlur(image, (5, 5), 1.5) for image in images[..., 0]])
    return np.clip(out.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)[..., None]


def write_partitions(source: Path, folder: Path, sites: int, seed: int) -> dict:
    from edgeopt.tasks.classification.data import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    splits = load_dataset(str(source))
    train, test, classes = splits.train, splits.test, np.array(splits.classes)
    rest, lab = train.split(LAB_SHARE, seed)
    parts = dirichlet_partition(rest.labels, sites, ALPHA, seed, MIN_SITE)

    def save(name: str, images, labels, test_images=test.images, test_labels=test.labels) -> str:
        path = folder / f"{name}.npz"
        np.savez(path, x_train=images, y_train=labels, x_test=test_images, y_test=test_labels, classes=classes)
        return str(path)

    files = {"lab": save("lab", lab.images, lab.labels), "pooled": save("pooled", rest.images, rest.labels),
             "sites": [save(f"site{i}", rest.images[p], rest.labels[p]) for i, p in enumerate(parts)]}
    files["shifted"] = save("site0-shifted", shift(rest.images[parts[0]]), rest.labels[parts[0]],
                            shift(test.images), test.labels)
    files["shifted_test"] = save("shifted-test", lab.images, lab.labels, shift(test.images), test.labels)
    files["counts"] = [np.bincount(rest.labels[p], minlength=len(classes)).tolist() for p in parts]
    dealt = np.array_split(np.random.default_rng(seed + 1).permutation(len(rest.labels)), sites)  # no label skew
    files["iid"] = [save(f"iid{i}", rest.images[p], rest.labels[p]) for i, p in enumerate(dealt)]
    return files


# -- the arms -------------------------------------------------------------------------------------------------
def train_lab(lab: str, out: Path, seed: int) -> dict:
    trained = edgeopt.train(lab, "torchvision:resnet18", out, LAB_EPOCHS, lr=0.002, seed=seed, threads=2, resume=True)
    return {"top1": trained.measurement.metrics["top1"], "checkpoint": str(out)}


def fine_tune_alone(start: Path, data: str, test: str, tune, epochs: int, out: Path, seed: int) -> dict:
    """One machine fine-tunes the lab model on ``data`` with the sites' own code (the same fine-tune, one call)."""
    from edgeopt.models.sources import load_model, save_checkpoint

    model = load_model(str(start))
    metrics = fine_tune_at_site(model, SiteSettings(data=data, threads=2), dataclasses.replace(tune, epochs=epochs),
                                0.0, seed=seed)
    save_checkpoint(model, out)
    return {"top1": score(out, test), "examples": metrics["num-examples"], "checkpoint": str(out)}


def federate(start: Path, sites: list[str], server_data: str, strategy: str, args, out: Path,
             extra_test: str | None = None) -> dict:
    """A real federation: a SuperLink, one SuperNode per site (separate processes on 127.0.0.1)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # a federation interrupted mid-way starts again (arms are whole)
    address = Address("127.0.0.1", free_port())
    settings = FederationSettings(model=str(start), out=str(out), data=server_data, strategy=strategy,
                                  rounds=args.rounds, min_clients=len(sites), epochs=args.local_epochs, lr=args.lr,
                                  batch_size=args.batch_size, seed=args.seed, round_timeout=1800.0,
                                  round_schedule="cosine", bn_statistics=True, proximal_mu=args.mu)
    nodes = [start_supernode(address, SiteSettings(data=site, threads=1).to_node_config(), out / "sites", f"site{i}")
             for i, site in enumerate(sites)]
    try:
        state = coordinate(settings, address, on_round=lambda e: print(f"  {strategy} round {e['round']}: "
                                                                          f"top1 {e.get('top1', 0):.4f}", flush=True))
    finally:
        for node in nodes:
            node.stop()
    checkpoint = state.model_path(out)
    rounds = [entry for entry in state.history if entry["round"] > 0]
    result = {"top1": score(checkpoint, server_data), "checkpoint": str(checkpoint),
              "curve": [entry.get("top1") for entry in state.history],
              "bytes_per_round": float(np.mean([e["bytes_down"] + e["bytes_up"] for e in rounds])),
              "seconds_per_round": float(np.mean([e["seconds"] for e in rounds]))}
    if extra_test:
        result["top1_shifted"] = score(checkpoint, extra_test)
    return result


def adapt_at_site(checkpoint: Path, site: str, test: str, out: Path) -> dict:
    """The shifted site makes the federation's model its own: BatchNorm statistics of its images (AdaBN)."""
    edgeopt.adapt_batchnorm(checkpoint, site, out, threads=2)
    return {"top1": score(out, test), "checkpoint": str(out)}


def compress(checkpoint: Path, data: str, backend: str, out: Path) -> dict:
    """Static INT8 calibrated on the lab set (ONNX Runtime: per-channel weights, QDQ; OpenVINO: NNCF's accuracy
    control, at most 1 point on the lab set), built and verified as every artifact is."""
    quantization = INT8_QUANTIZATION[backend]
    export = edgeopt.ExportConfig(backend, "int8", quantization=quantization)
    recipe = edgeopt.Recipe(str(checkpoint), data, export=export)
    artifact = edgeopt.build(recipe, out, force=True, threads=2, progress=False)
    return {"top1": score(artifact.path, data), "fp32_top1": score(checkpoint, data), "artifact": str(artifact.path),
            "backend": backend, "source": str(checkpoint)}


def central_lr(name: str, details: dict) -> float:
    return details["lr"] if name == "centralized" else float(name.removeprefix("centralized-lr"))


def score(model: Path | str, data: str) -> float:
    return float(edgeopt.evaluate(str(model), data)["metrics"]["top1"])


# -- the report -----------------------------------------------------------------------------------------------
def markdown(results: dict, details: dict) -> str:
    sites = [results[f"site{i}-alone"] for i in range(details["sites"])]
    alone = float(np.mean([s["top1"] for s in sites]))
    reference = details["reference"]
    central, best = results[reference]["top1"], results[details["best"]]["top1"]
    fed_int8 = results["int8-federated"]
    lines = [f"Measured {measured_on(results, details['date'])} on {environment_line(details['environment'])}. "
             "NEU-CLS-64, ResNet-18; "
             f"the lab model trained {LAB_EPOCHS} epochs on {LAB_SHARE:.0%} of the training split; the rest split across "
             f"{details['sites']} sites by Dirichlet(α = {details['alpha']}) (images per class and site: "
             f"{details['partition']}). Every arm: {details['rounds'] * details['local_epochs']} epochs of AdamW "
             f"{details['lr']:g} following one cosine, batch {details['batch_size']}, from the lab model (the "
             f"centralized arm also at the other learning rates shown; the best centralized is the reference); "
             f"federations {details['rounds']} rounds × {details['local_epochs']} local epochs (the cosine over the "
             f"rounds), the sites measuring each aggregate's BatchNorm statistics, all processes on these 2 cores. "
             f"Scored on the 360 test images. Command: `python benchmarks/federated.py`", "",
             "| arm | test top-1 | vs centralized (pts) | bytes per round | s per round | wall |",
             "|---|---|---|---|---|---|",
             f"| lab model (start) | {results['lab']['top1']:.2%} | {100 * (results['lab']['top1'] - central):+.2f} | | | |"]
    for name in details["central_arms"]:
        label = f"centralized (pooled images), lr {central_lr(name, details):g}"
        label += " (the reference)" if name == reference else ""
        lines.append(f"| {label} | {results[name]['top1']:.2%} | {100 * (results[name]['top1'] - central):+.2f} | | | "
                     f"{results[name]['wall_s'] / 60:.1f} min |")
    lines.append(f"| each site alone (mean of {len(sites)}) | {alone:.2%} | {100 * (alone - central):+.2f} | | | "
                 f"{sum(s['wall_s'] for s in sites) / 60:.1f} min |")
    names = {"fedavg": "FedAvg", "fedprox": f"FedProx μ={details['mu']:g}",
             "fedprox-iid": f"FedProx μ={details['mu']:g} on IID sites (the same images dealt at random: no label skew)"}
    for strategy, name in names.items():
        if strategy not in results:  # the IID diagnostic may not have been run
            continue
        r = results[strategy]
        lines.append(f"| {name} | {r['top1']:.2%} | "
                     f"{100 * (r['top1'] - central):+.2f} | {r['bytes_per_round'] / 1e6:.1f} MB | "
                     f"{r['seconds_per_round']:.0f} | {r['wall_s'] / 60:.1f} min |")
    lines += ["", "Per site alone: " + ", ".join(f"site {i} {s['top1']:.2%} ({s['examples']} images)"
                                              for i, s in enumerate(sites)) + ".", "",
              f"Federated (best: {details['best']}) {best:.2%}: {100 * (best - central):+.2f} points from centralized "
              f"(goal: within 2), {100 * (best - alone):+.2f} points above the sites alone (goal: at least 5)."
              + iid_sentence(results, central), "",
              f"| compressed ({INT8_LABELS[details.get('int8_backend', 'openvino')]}) | FP32 top-1 | INT8 top-1 | Δ pts |",
              "|---|---|---|---|"]
    for name, label in (("int8-federated", f"federated ({details['best']})"), ("int8-centralized", f"centralized (lr {central_lr(reference, details):g})")):
        r = results[name]
        lines.append(f"| {label} | {r['fp32_top1']:.2%} | {r['top1']:.2%} | {100 * (r['top1'] - r['fp32_top1']):+.2f} |")
    lines += ["", f"The compressed federated artifact: {100 * (fed_int8['top1'] - fed_int8['fp32_top1']):+.2f} points "
                  "from the federated FP32 model (goal: within 1).", ""]
    if "shifted-fedavg" not in results or "shifted-alone" not in results:
        return "\n".join([*lines, "The second federation (one site's camera changed) was not run "
                                   "(`--no-shifted`).", ""])
    shifted, own = results["shifted-fedavg"], results["shifted-alone"]
    lines += [f"A site whose camera changed (its images and test images darker and blurred; it holds "
              f"{results['site0-alone']['examples']} of the {sum(s['examples'] for s in sites)} training images): on its shifted test images, the federation's "
              f"model (FedAvg) {shifted['top1_shifted']:.2%}, the site alone {own['top1']:.2%} "
              f"({100 * (shifted['top1_shifted'] - own['top1']):+.2f} points); the federation's model on the clean "
              f"test images {shifted['top1']:.2%}."]
    if "shifted-adapted" in results:
        adapted = results["shifted-adapted"]["top1"]
        lines += ["", f"The federation's model with the site's own BatchNorm statistics (`edgeopt federate adapt`: "
                      f"measured on its images, no training, nothing leaves the site): {adapted:.2%} on its shifted "
                      f"test images, {100 * (adapted - own['top1']):+.2f} points above the site alone and "
                      f"{100 * (adapted - shifted['top1_shifted']):+.2f} above the federation's model as it came."]
    lines.append("")
    return "\n".join(lines)


def iid_sentence(results: dict, central: float) -> str:
    """What the federation on IID sites says next to the skewed one (nothing when it was not run)."""
    if "fedprox-iid" not in results:
        return ""
    iid, skewed = results["fedprox-iid"]["top1"], results["fedprox"]["top1"]

    def gap(points: float) -> str:
        return f"{abs(points):.2f} points {'below' if points < 0 else 'above'}"

    return (f" FedProx on IID sites (the same images dealt at random; one seed): {iid:.2%}, "
            f"{gap(100 * (iid - central))} centralized without any label skew; FedProx on the skewed sites ends "
            f"{gap(100 * (skewed - iid))} that.")


def measured_on(results: dict, today: str) -> str:
    """When the arms were measured: a run reuses the arms an earlier run left in its folder, so the dates can
    differ (an arm recorded before arms carried their date says so)."""
    dates = {name: r.get("date", "undated") for name, r in results.items() if isinstance(r, dict) and "wall_s" in r}
    if not dates:
        return today
    usual = max(sorted(set(dates.values())), key=list(dates.values()).count)
    others = [f"{name} {date}" for name, date in dates.items() if date != usual]
    return usual + (f" (except: {', '.join(others)})" if others else "")


def plot(results: dict, details: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    epochs_per_round = details["local_epochs"]
    for strategy, label in (("fedavg", "FedAvg"), ("fedprox", "FedProx"), ("fedprox-iid", "FedProx, IID sites (no label skew)"),
                            ("shifted-fedavg", "FedAvg, one site shifted (scored on the clean test images)")):
        if strategy not in results:
            continue
        curve = results[strategy]["curve"]
        axis.plot([r * epochs_per_round for r in range(len(curve))], [100 * c for c in curve], marker="o", label=label)
    alone = 100 * float(np.mean([results[f"site{i}-alone"]["top1"] for i in range(details["sites"])]))
    axis.axhline(100 * results[details["reference"]]["top1"], color="black", linestyle="--", label="centralized (pooled, best lr)")
    axis.axhline(alone, color="grey", linestyle=":", label="each site alone (mean)")
    axis.set_xlabel("epochs of local training")
    axis.set_ylabel("NEU-CLS test top-1 (%)")
    axis.set_title(f"Federated fine-tuning, {details['sites']} sites, Dirichlet α = {details['alpha']}")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
