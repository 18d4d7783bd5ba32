"""Soak: the server and a video stream for minutes under mixed load, model swaps and bad requests.

One server (``edgeopt.serve.serve``, spawned as `edgeopt serve` would run) watches a model
repository holding a classifier and a detector. For ``--minutes`` (default 10):

- four client threads send a mix: valid inference (JSON and binary tensors, both models), image
  uploads to ``/predict``, metadata and health calls, and bad requests (malformed JSON, wrong
  shapes, NaN, a wrong token, an oversized body, an image that is not one);
- every ``--swap-every`` seconds a new version of the classifier is published into the watched
  repository; every third one is tampered with and must be refused while the old one serves on;
- a stream (``edgeopt.stream.run_stream``) plays a generated video in real time through the
  detector in its own process.

It reports requests served, every status code and its count (a 500 fails the run), p99 of the
valid requests per minute (drift: last minute over the first), the server's RSS after a
warm-up minute and at the end (growth), swaps published and refused, and the stream's frames.

    python benchmarks/soak.py                 # 10 minutes -> RESULTS.md, results/soak.json, results/soak.png
    python benchmarks/soak.py --minutes 0.5 --no-write    # what the test suite runs
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import io
import json
import multiprocessing
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from loopback import free_port  # benchmarks/loopback.py
from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

from edgeopt.measure.process import rss_mb

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
TOKEN = "soak-token-0123456789"
HEADER = "Inference-Header-Content-Length"
SIZE = 64


def build_artifacts(work: Path) -> dict[str, Path]:
    """An ONNX Runtime classifier and SSDlite detector (random init: the soak is about the service)."""
    from edgeopt.compile import export
    from edgeopt.models.sources import load_model

    made = {}
    for name, source, shape in (("cls", "edgeopt.models.zoo:tiny_cnn", f"1x3x{SIZE}x{SIZE}"),
                                ("det", f"edgeopt.models.detectors:ssdlite?num_classes=3&size={SIZE}&in_channels=3",
                                 f"1x3x{SIZE}x{SIZE}")):
        folder = work / "artifacts" / name
        if not (folder / "manifest.json").is_file():
            export(load_model(source, input=shape), "onnxruntime", folder, overwrite=True)
        made[name] = folder
    return made


def _serve(repository: str, port: int) -> None:
    from edgeopt.serve import ServeSettings, serve

    serve({}, watch=Path(repository), port=port, threads=1,
          settings=ServeSettings(token=TOKEN, poll_seconds=1.0, max_body_bytes=4 << 20))


def _stream(video: str, artifact: str, seconds: float, out: str) -> None:
    from edgeopt.stream import run_stream
    from edgeopt.stream.pipeline import StreamConfig

    stats = run_stream(video, artifact, StreamConfig(realtime=True, duration=seconds, threads=1))
    Path(out).write_text(json.dumps({"received": stats.received, "processed": stats.processed,
                                     "skipped": stats.source.skipped, "seconds": stats.seconds,
                                     "p50_ms": float(np.percentile(stats.latencies_ms, 50)) if stats.latencies_ms else None}))


def write_video(path: Path, seconds: float, fps: float = 15.0) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (SIZE, SIZE))
    rng = np.random.default_rng(0)
    for index in range(int(seconds * fps) + 1):
        frame = np.full((SIZE, SIZE, 3), 40, np.uint8)
        x = index % (SIZE - 16)
        frame[20:36, x:x + 16] = 220
        writer.write(frame + rng.integers(0, 10, frame.shape, dtype=np.uint8))
    writer.release()


class Load:
    """The client mix, from ``threads`` threads until ``stop`` is set; statuses and valid latencies by time."""

    def __init__(self, url: str, started: float) -> None:
        self.url, self.started = url, started
        self.statuses: collections.Counter = collections.Counter()
        self.by_kind: collections.Counter = collections.Counter()
        self.latencies: list[tuple[float, float]] = []  # (seconds since start, ms) of valid inference
        self.lock = threading.Lock()
        self.transport_errors = 0
        self.client_errors: list[str] = []
        image = io.BytesIO()
        from PIL import Image

        Image.fromarray(np.full((48, 48, 3), 90, np.uint8)).save(image, format="PNG")
        self.png = image.getvalue()

    def _requests(self, rng: random.Random):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        sample = np.random.default_rng(rng.randrange(1 << 30)).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
        tensor = {"name": "input", "shape": [1, 3, SIZE, SIZE], "datatype": "FP32"}
        roll = rng.random()
        model = rng.choice(["cls", "det"])
        if roll < 0.35:
            body = {"inputs": [{**tensor, "data": sample.ravel().tolist()}]}
            return "valid", "POST", f"/v2/models/{model}/infer", {"json": body, "headers": auth}
        if roll < 0.65:
            header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": sample.nbytes}}]}).encode()
            return "valid", "POST", f"/v2/models/{model}/infer", {
                "content": header + sample.tobytes(),
                "headers": {**auth, HEADER: str(len(header)), "content-type": "application/octet-stream"}}
        if roll < 0.72:
            return "valid", "POST", f"/v2/models/{model}/predict", {"content": self.png,
                                                                    "headers": {**auth, "content-type": "image/png"}}
        if roll < 0.80:
            return "meta", "GET", rng.choice([f"/v2/models/{model}", "/v2/health/ready", "/v2", "/metrics"]), {"headers": auth}
        bad = rng.choice([
            {"content": b"{not json", "headers": {**auth, "content-type": "application/json"}},
            {"json": {"inputs": [{**tensor, "shape": [1, 3, 7, 7], "data": [0.0] * 147}]}, "headers": auth},
            {"content": json.dumps({"inputs": [{**tensor, "data": [float("nan")] * sample.size}]}).encode(),
             "headers": {**auth, "content-type": "application/json"}},  # NaN: Python's json writes it, httpx's refuses
            {"json": {"inputs": [{**tensor, "data": sample.ravel().tolist()}]}, "headers": {"Authorization": "Bearer wrong"}},
            {"content": b"\0" * (5 << 20), "headers": {**auth, "content-type": "application/octet-stream"}},
        ])
        if rng.random() < 0.2:
            return "bad", "POST", f"/v2/models/{model}/predict", {"content": b"not an image", "headers": {**auth, "content-type": "image/png"}}
        return "bad", "POST", f"/v2/models/{model}/infer", bad

    def run(self, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not stop.is_set():
                kind, method, path, kwargs = self._requests(rng)
                began = time.perf_counter()
                try:
                    status = client.request(method, path, **kwargs).status_code
                except httpx.TransportError:
                    with self.lock:
                        self.transport_errors += 1
                    continue
                except Exception as exc:  # a bug in this client must show in the figures, not end its thread quietly
                    with self.lock:
                        self.client_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - began) * 1000
                with self.lock:
                    self.statuses[status] += 1
                    self.by_kind[(kind, status)] += 1
                    if kind == "valid" and status == 200:
                        self.latencies.append((time.perf_counter() - self.started, elapsed))
                time.sleep(rng.uniform(0.0, 0.01))


def publish(repository: Path, source: Path, name: str, version: int, tamper: bool) -> None:
    """A new version, copied whole then renamed into the watched folder (as an exporter writes one)."""
    staging = repository / name / f".{version}.partial"
    shutil.copytree(source, staging)
    if tamper:
        model = staging / "model.onnx"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    staging.rename(repository / name / str(version))


def per_minute_p99(latencies: list[tuple[float, float]], seconds: float) -> list[float]:
    window = 60.0 if seconds >= 120 else seconds / 2
    edges = np.arange(0, seconds + 1e-9, window)
    times = np.array([t for t, _ in latencies])
    values = np.array([v for _, v in latencies])
    return [float(np.percentile(values[(times >= lo) & (times < lo + window)], 99))
            for lo in edges[:-1] if ((times >= lo) & (times < lo + window)).any()]


def soak(minutes: float, swap_every: float, work: Path) -> dict:
    seconds = minutes * 60
    work.mkdir(parents=True, exist_ok=True)
    artifacts = build_artifacts(work)
    repository = work / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    for name, folder in artifacts.items():
        (repository / name).mkdir(parents=True)
        shutil.copytree(folder, repository / name / "1")
    video = work / "conveyor.mkv"
    write_video(video, seconds + 5)
    port = free_port()
    context = multiprocessing.get_context("spawn")
    server = context.Process(target=_serve, args=(str(repository), port), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not server.is_alive():
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    stream_out = work / "stream.json"
    stream = context.Process(target=_stream, args=(str(video), str(artifacts["det"]), seconds, str(stream_out)))
    stream.start()
    started = time.perf_counter()
    load, stop = Load(url, started), threading.Event()
    clients = [threading.Thread(target=load.run, args=(stop, seed), daemon=True) for seed in range(4)]
    for client in clients:
        client.start()
    rss, swaps, refused_swaps, version = [], 0, 0, 1
    next_swap, warm_rss = started + swap_every, None
    try:
        while (now := time.perf_counter()) - started < seconds:
            rss.append((now - started, rss_mb(server.pid) or float("nan")))
            if warm_rss is None and now - started >= min(60.0, seconds / 4):
                warm_rss = rss[-1][1]
            if now >= next_swap:
                version += 1
                tamper = version % 3 == 0
                publish(repository, artifacts["cls"], "cls", version, tamper)
                swaps += 1
                refused_swaps += tamper
                next_swap = now + swap_every
            done = int(now - started)
            if done % 10 == 0:
                print(f"{done:4d}/{seconds:.0f} s · {sum(load.statuses.values())} requests · RSS {rss[-1][1]:.0f} MB · "
                      f"swaps {swaps}", flush=True)
            time.sleep(1.0)
    finally:
        alive = sum(c.is_alive() for c in clients)
        stop.set()
        for client in clients:
            client.join(30)
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        server.terminate()
        server.join(30)
        stream.join(seconds + 60)
    refused_counted = sum(float(line.split()[-1]) for line in metrics.splitlines()
                          if line.startswith("edgeopt_model_versions_refused_total"))
    served_version = next((line.split()[-1] for line in metrics.splitlines()
                           if line.startswith("edgeopt_model_version{") and 'model="cls"' in line), None)
    p99 = per_minute_p99(load.latencies, seconds)
    final_rss = rss[-1][1]
    return {
        "minutes": minutes, "requests": sum(load.statuses.values()), "statuses": dict(sorted(load.statuses.items())),
        "by_kind": {f"{k} {s}": n for (k, s), n in sorted(load.by_kind.items())},
        "server_errors": sum(n for s, n in load.statuses.items() if s >= 500), "transport_errors": load.transport_errors,
        "client_errors": load.client_errors[:5], "clients_alive": alive,
        "p99_ms_per_window": p99, "p99_drift": p99[-1] / p99[0] if len(p99) >= 2 else None,
        "rss_warm_mb": warm_rss, "rss_final_mb": final_rss, "rss_growth_mb": final_rss - (warm_rss or final_rss),
        "rss_series": rss[:: max(1, len(rss) // 120)], "swaps": swaps, "tampered_swaps": refused_swaps,
        "refused_counted": refused_counted, "cls_version_at_end": served_version,
        "stream": json.loads(stream_out.read_text()) if stream_out.is_file() else None,
    }


def plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    p99 = figures["p99_ms_per_window"]
    left.plot(range(1, len(p99) + 1), p99, "o-")
    left.set_xlabel("minute"), left.set_ylabel("p99 of valid requests, ms"), left.set_title("latency through the soak")
    left.set_ylim(bottom=0)
    times, values = zip(*figures["rss_series"])
    right.plot(np.array(times) / 60, values)
    right.set_xlabel("minute"), right.set_ylabel("server RSS, MB"), right.set_title("server memory")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def markdown(f: dict, command: str) -> str:
    from edgeopt.measure import environment

    env = environment.collect()
    stream = f["stream"] or {}
    statuses = ", ".join(f"{code}: {count:,}" for code, count in f["statuses"].items())
    drift = f"{f['p99_drift']:.2f}×" if f["p99_drift"] else "–"
    return "\n".join([
        f"Measured {dt.date.today().isoformat()} on {env['cpu']} ({env['usable_cpus']} CPUs; server, stream and "
        f"clients share them) · `{command}`", "",
        "| minutes | requests | 500s | transport errors | p99 first → last window | RSS after warm-up → end | swaps (tampered, refused) | stream frames processed / skipped |",
        "|---|---|---|---|---|---|---|---|",
        f"| {f['minutes']:g} | {f['requests']:,} | {f['server_errors']} | {f['transport_errors']} | "
        f"{f['p99_ms_per_window'][0]:.1f} → {f['p99_ms_per_window'][-1]:.1f} ms ({drift}) | "
        f"{f['rss_warm_mb']:.0f} → {f['rss_final_mb']:.0f} MB ({f['rss_growth_mb']:+.1f}) | "
        f"{f['swaps']} ({f['tampered_swaps']}, {f['refused_counted']:.0f}) | "
        f"{stream.get('processed', '–')} / {stream.get('skipped', '–')} |", "",
        f"Status codes: {statuses}. The classifier served version {f['cls_version_at_end']} at the end.", "",
        "![soak](results/soak.png)", ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--swap-every", type=float, default=60.0, help="seconds between published versions")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "soak")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    swap_every = min(args.swap_every, args.minutes * 60 / 4)  # a short run still swaps a few times
    figures = soak(args.minutes, swap_every, args.work)
    shown = {k: v for k, v in figures.items() if k != "rss_series"}
    print(json.dumps(shown, indent=2))
    ok = (figures["server_errors"] == 0 and figures["transport_errors"] == 0 and not figures["client_errors"]
          and figures["clients_alive"] == 4 and figures["refused_counted"] >= figures["tampered_swaps"])
    if not args.no_write:
        out = ROOT / "benchmarks" / "results"
        (out / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
        plot(figures, out / "soak.png")
        write_section(START, END, markdown(figures, f"python benchmarks/soak.py --minutes {args.minutes:g}"),
                      "Soak: server and stream under mixed load (`benchmarks/soak.py`)")
    print("soak: " + ("ok" if ok else "FAILED (a 500, a transport or client error, or a tampered version not refused)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
