"""The same image, the same answer: what `edgeopt eval`, `edgeopt predict`, the server's `/predict` and
`edgeopt stream` run (``edgeopt.evaluate``, the ``Predictor``, ``edgeopt.serve``, ``run_stream``) on every
NEU-CLS and NEU-DET test image, for ONNX Runtime INT8 and OpenVINO INT8. tests/realdata/test_same_answers.py
runs the commands themselves.

    .venv/bin/python benchmarks/same_answers.py                 # the trained models of benchmarks/
    .venv/bin/python benchmarks/same_answers.py --quick     # small models trained here

The test splits are written as PNG files (lossless: the pixels eval reads) into --out, never into
the repository; eval reads the arrays, the other three read the files; the server gets their bytes. Classifiers must agree on
the top-1 label of every image; detectors on every box (same labels, coordinates within 1e-3 px,
which the JSON's 0.001 px rounding allows) at a 0.1 score threshold. The trained models are
runs/neu-resnet18.safetensors (benchmarks/compression.py) and runs/neu-det/ssdlite-128.safetensors
(benchmarks/detection.py); with --quick, or when they are missing, small ones are trained here
(predictions need not be good to be compared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from loopback import Server  # benchmarks/loopback.py
from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

import edgeopt

ROOT = Path(__file__).resolve().parents[1]

BACKENDS = ("onnxruntime", "openvino")
BOX_TOLERANCE_PX = 1e-3
DETECTOR_EPOCHS = 8  # fewer leave a detector whose outputs barely follow its input: INT8 is refused for it
SCORE_THRESHOLD = 0.1  # more boxes than the display default: more to disagree on
START, END = "<!-- same-answers:start -->", "<!-- same-answers:end -->"


def models(datasets: Path, out: Path, quick: bool) -> dict[str, tuple[str, str]]:
    """{kind: (checkpoint, data)}: the benchmarks' trained models, or small ones trained here."""
    cls_data, det_data = str(datasets / "neu_cls_64.npz"), str(datasets / "neu_det")
    cls, det = ROOT / "runs/neu-resnet18.safetensors", ROOT / "runs/neu-det/ssdlite-128.safetensors"
    if quick or not cls.is_file():
        cls = out / "neu-cls-tiny.safetensors"
        if not cls.is_file():
            print("training a small NEU-CLS classifier", file=sys.stderr)
            edgeopt.train(cls_data, "edgeopt.models.zoo:tiny_cnn", cls, epochs=2, augment=False)
    if quick or not det.is_file():
        det = out / "neu-det-small.safetensors"
        if not det.is_file():
            print("training a small NEU-DET detector", file=sys.stderr)
            edgeopt.train(det_data, "edgeopt.models.detectors:ssdlite", det, DETECTOR_EPOCHS, batch_size=32, lr=0.004,
                          task="detection")
    return {"NEU-CLS": (str(cls), cls_data), "NEU-DET": (str(det), det_data)}


def write_test_images(kind: str, data: str, folder: Path) -> list[Path]:
    """The test split as PNG files, named by index."""
    from PIL import Image

    if kind == "NEU-DET":
        from edgeopt.tasks.detection.data import load_detection

        images = load_detection(data, size=None).test.images
    else:
        from edgeopt.tasks.classification.data import load_dataset

        images = load_dataset(data).test.images
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(images):
        path = folder / f"{index:04d}.png"
        if not path.is_file():
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
        paths.append(path)
    return paths


def answers(artifact: Path, data: str, files: list[Path], url: str, name: str) -> dict[str, list[dict]]:
    """{way: [record per image, in index order]}."""
    import httpx

    from edgeopt.runtime.predictor import Predictor
    from edgeopt.stream.pipeline import StreamConfig, run_stream

    by_eval = edgeopt.evaluate(str(artifact), data, predictions=True, score_threshold=SCORE_THRESHOLD)["predictions"]
    predictor = Predictor(artifact, score_threshold=SCORE_THRESHOLD)
    by_predict = [predictor.predict(f) for f in files]
    by_server = [httpx.post(f"{url}/v2/models/{name}/predict", content=f.read_bytes(), timeout=60,
                            headers={"content-type": "image/png"}).json() for f in files]
    by_stream: list[dict] = []
    run_stream(str(files[0].parent), artifact, StreamConfig(score_threshold=SCORE_THRESHOLD, track=False),
               on_record=by_stream.append)
    return {"eval": by_eval, "predict": by_predict, "/predict": by_server, "stream": by_stream}


def disagreements(kind: str, reference: list[dict], other: list[dict]) -> tuple[int, float]:
    """(images that differ, largest box difference in px) of ``other`` against ``reference``."""
    if len(reference) != len(other):
        return max(len(reference), len(other)), float("inf")
    differ, worst = 0, 0.0
    for a, b in zip(reference, other):
        if kind == "NEU-CLS":
            differ += a["label"] != b["label"]
            continue
        if a["labels"] != b["labels"]:
            differ += 1
            continue
        gap = float(np.max(np.abs(np.asarray(a["boxes"]) - np.asarray(b["boxes"])), initial=0.0))
        worst = max(worst, gap)
        differ += gap > BOX_TOLERANCE_PX
    return differ, worst


def _box_gap(row: dict) -> str:
    return "–" if row["dataset"] == "NEU-CLS" else f"{row['max_box_diff_px']:.1g} px"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "same-answers")
    parser.add_argument("--quick", action="store_true", help="Small models trained here (what the test runs).")
    parser.add_argument("--json", type=Path, help="Write the rows as JSON.")
    parser.add_argument("--write-results", action="store_true", help="Update benchmarks/RESULTS.md.")
    args = parser.parse_args()
    if not (args.datasets_dir / "neu_cls_64.npz").is_file() or not (args.datasets_dir / "neu_det").is_dir():
        print(f"NEU-CLS/NEU-DET not found in {args.datasets_dir}; pass --datasets-dir", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = models(args.datasets_dir, args.out, args.quick)
    artifacts = {}
    for kind, (checkpoint, data) in trained.items():
        for backend in BACKENDS:
            folder = args.out / f"{kind.lower()}-{backend}-int8"
            if not (folder / "manifest.json").is_file():
                print(f"quantizing {kind} for {backend}", file=sys.stderr)
                edgeopt.quantize(checkpoint, data, backend, folder, edgeopt.QuantizationConfig(calibration_samples=100),
                                 force=True)
            artifacts[(kind, backend)] = folder
    from edgeopt.serve import ServeSettings

    served = {f"{kind.lower()}-{backend}": folder for (kind, backend), folder in artifacts.items()}
    server = Server(served, ServeSettings(), score_threshold=SCORE_THRESHOLD, ready_within=300)
    rows = []
    try:
        for (kind, backend), folder in artifacts.items():
            data = trained[kind][1]
            files = write_test_images(kind, data, args.out / f"{kind.lower()}-test")
            found = answers(folder, data, files, server.url, f"{kind.lower()}-{backend}")
            for way in ("predict", "/predict", "stream"):
                differ, worst = disagreements(kind, found["eval"], found[way])
                boxes = sum(len(r.get("boxes", [])) for r in found[way])
                rows.append({"dataset": kind, "backend": backend, "way": way, "images": len(found[way]),
                             "differ": differ, "max_box_diff_px": worst, "boxes": boxes})
                print(f"{kind} {backend} INT8 eval vs {way}: {len(found[way])} images, {differ} differ"
                      + (f", {boxes} boxes, largest box difference {worst:.2g} px" if kind == "NEU-DET" else ""),
                      flush=True)
    finally:
        server.stop()
    minutes = (time.perf_counter() - started) / 60
    print(f"done in {minutes:.1f} min")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write_results:
        from edgeopt.measure.environment import collect
        from edgeopt.report.console import environment_line

        table = ["| dataset | runtime | compared with eval | images | differ | boxes | largest box difference |",
                 "|---|---|---|---:|---:|---:|---:|"]
        table += [f"| {r['dataset']} | {r['backend']} INT8 | {r['way']} | {r['images']} | {r['differ']} | "
                  f"{r['boxes'] or '–'} | {_box_gap(r)} |" for r in rows]
        body = (f"Measured {time.strftime('%Y-%m-%d')} on {environment_line(collect())}; "
                f"`python benchmarks/same_answers.py{' --quick' if args.quick else ''} --write-results`.\n\n"
                + "\n".join(table) + "\n")
        write_section(START, END, body, "The same image gets the same answer (`benchmarks/same_answers.py`)")
    return 0 if all(r["differ"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
