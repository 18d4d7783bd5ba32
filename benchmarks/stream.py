"""`edgeopt stream` on a conveyor belt: a video of the NEU-DET test images through the INT8 detector.

1. The 360 test images become a lossless FFV1 video (one steel plate per frame, 25 fps).
2. The stream pipeline (`edgeopt.stream.run_stream`, what `edgeopt stream` runs) goes over it frame by frame (every box over 0.01, no tracking) and its
   mAP@0.5, computed from the JSON lines, is set beside `edgeopt eval` on the same images.
3. Throughput and capture-to-result latency: as fast as possible (file mode, with and
   without tracking), played as a 25 fps camera (`--realtime`), and as a 1000 fps camera (the
   model cannot keep up: skipped frames are counted, received = processed + skipped).

    python benchmarks/stream.py            # needs runs/neu-det/ssdlite-128.safetensors and ../shared/datasets/neu_det
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- stream:start -->", "<!-- stream:end -->"


def write_video(images: np.ndarray, path: Path, fps: float) -> None:
    import cv2

    height, width = images.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
    for image in images:
        writer.write(cv2.cvtColor(image.squeeze(-1), cv2.COLOR_GRAY2BGR))
    writer.release()


def stream(video: Path, artifact: Path, name: str, **options) -> tuple[dict, list[dict]]:
    from edgeopt.stream import StreamConfig, run_stream

    records: list[dict] = []
    figures = run_stream(str(video), artifact, StreamConfig(**options), on_record=records.append).summary()
    print(f"{name}: {figures}", flush=True)
    return figures, records


def streamed_map(records: list[dict], test) -> float:
    from edgeopt.tasks.detection.boxes import Detections
    from edgeopt.tasks.detection.task import coco_evaluation

    found = [Detections(np.asarray(r["boxes"], np.float32).reshape(-1, 4), np.asarray(r["scores"], np.float32),
                        np.asarray([test.classes.index(n) for n in r["labels"]], np.int64)) for r in records]
    return coco_evaluation(found, test)["map50"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "stream")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import edgeopt
    from edgeopt.tasks.detection.data import load_detection
    from edgeopt.measure.environment import collect
    from edgeopt.report.console import environment_line

    data = args.datasets_dir / "neu_det"
    checkpoint = ROOT / "runs" / "neu-det" / "ssdlite-128.safetensors"
    if not data.is_dir() or not checkpoint.is_file():
        print(f"needs {data} and {checkpoint} (benchmarks/detection.py trains it)")
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    artifact = args.work / "neu-det-ort-int8"
    if not artifact.is_dir():
        edgeopt.export(str(checkpoint), "onnxruntime", artifact, "int8", calibrate=str(data))
    test = load_detection(str(data), size=None, channels=1).test
    video = args.work / "neu-det-conveyor.avi"
    write_video(test.images, video, fps=25)
    threads = {"threads": args.threads}

    accuracy, records = stream(video, artifact, "map", score_threshold=0.01, track=False, **threads)
    map_stream = streamed_map(records, test)
    map_eval = edgeopt.evaluate(str(artifact), str(data))["metrics"]["map50"]
    runs = {"file, no tracking": stream(video, artifact, "file", track=False, **threads)[0],
            "file, ByteTrack + line count": stream(video, artifact, "tracked", line=(0, 64, 128, 64), **threads)[0],
            "25 fps camera (--realtime)": stream(video, artifact, "camera25", realtime=True, **threads)[0]}
    fast = args.work / "neu-det-conveyor-1000fps.avi"
    write_video(np.concatenate([test.images] * 3), fast, fps=1000)
    runs["1000 fps camera (--realtime)"] = stream(fast, artifact, "camera1000", realtime=True, **threads)[0]

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Measured {when} on {environment_line(collect())}; `python benchmarks/stream.py`. Artifact: the NEU-DET "
             f"SSDlite (128 px) as ONNX Runtime INT8 (head in float), {args.threads} threads; video: the 360 test "
             "images as a lossless FFV1 AVI, one plate per frame.", "",
             f"**mAP@0.5 over the video {map_stream:.2%} vs `edgeopt eval` on the same images {map_eval:.2%}** "
             f"(difference {abs(map_stream - map_eval) * 100:.3f} points: JSON lines round boxes to 0.01 px and "
             f"scores to 1e-6). Frames: {accuracy['received']} received, {accuracy['processed']} processed, "
             f"{accuracy['unreadable']} unreadable.", "",
             "| run | received | processed | skipped | received FPS | processed FPS | skipped FPS | latency p50 ms | p95 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, f in runs.items():
        lines.append(f"| {name} | {f['received']} | {f['processed']} | {f['skipped']} | {f['received_fps']} | "
                     f"{f['processed_fps']} | {f['skipped_fps']} | {f['latency_p50_ms']} | {f['latency_p95_ms']} |")
    lines += ["", "Latency is capture to result: decode, preprocess, network, decoding + NMS (and tracking). In file "
              "mode nothing is skipped and the model sets the pace; a live source keeps only the newest frame."]
    body = "\n".join(lines) + "\n"
    (HERE / "results" / "stream.json").write_text(json.dumps(
        {"map50_stream": map_stream, "map50_eval": map_eval, "runs": runs}, indent=2) + "\n")
    print(body)
    if not args.no_write:
        write_section(START, END, body, "Video streams (`benchmarks/stream.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
